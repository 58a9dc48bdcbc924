"""NVIDIA aiperf as `bench live`'s client: its command line, and what we read from its export.

aiperf (PyPI `aiperf`, checked against 0.13.0) replays a Mooncake trace with
`--custom-dataset-type mooncake_trace --fixed-schedule`: each row is sent at its `timestamp`,
and its `hash_ids` become text, each id a fixed run of 512 tokens of aiperf's corpus, equal ids
equal text, so a shared prefix of ids is a shared text prefix an engine can cache. It writes
`profile_export_aiperf.json` in its artifact directory: one object per metric
(`{"unit": "ms", "avg": .., "p50": .., "p99": .., "count": ..}`), of which we read the client's
TTFT, the request and error counts and the run's length (`parse_profile_export`, pure).

Offline: aiperf loads its tokenizer through `transformers`; in offline mode (which its decode
worker processes force) it only finds tokenizers in the Hugging Face cache layout, not a plain
directory. So the peer install puts ours there (`peer_env.install_tokenizer`) and the run sets
`HF_HOME` to it with `HF_HUB_OFFLINE=1` (`aiperf_env`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "EXPORT_FILE",
    "TOKENIZER_REPO",
    "AiperfSummary",
    "aiperf_argv",
    "aiperf_env",
    "load_profile_export",
    "parse_profile_export",
]

EXPORT_FILE = "profile_export_aiperf.json"
#: the name our offline tokenizer has in the peer environment's Hugging Face cache
TOKENIZER_REPO = "agentctl/sim-bpe"


def aiperf_argv(
    aiperf: str | Path,
    *,
    url: str,
    model: str,
    input_file: str | Path,
    artifact_dir: str | Path,
    tokenizer: str = TOKENIZER_REPO,
    seed: int = 0,
    workers_max: int = 2,
    request_timeout_s: float = 600.0,
) -> list[str]:
    """`aiperf profile` replaying a Mooncake trace file on its timestamps against `url`.

    Streaming completions (TTFT needs a stream); token counts from the server's `usage` (our
    filler output re-tokenizes to other counts); no UI, no server-metrics or GPU scraping (we
    read the workers ourselves), few worker processes (the host has two cores)."""
    return [
        str(aiperf), "profile",
        "--model", model,
        "--tokenizer", tokenizer,
        "--url", url,
        "--endpoint-type", "completions",
        "--streaming",
        "--use-server-token-count",
        "--input-file", str(input_file),
        "--custom-dataset-type", "mooncake_trace",
        "--fixed-schedule",
        "--random-seed", str(seed),
        "--request-timeout-seconds", f"{request_timeout_s:g}",
        "--artifact-dir", str(artifact_dir),
        "--ui-type", "none",
        "--no-server-metrics",
        "--no-gpu-telemetry",
        "--workers-max", str(workers_max),
    ]  # fmt: skip


def aiperf_env(hf_home: str | Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment aiperf runs in: the peer's Hugging Face cache, strictly offline."""
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "HF_HOME": str(hf_home),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    return env


@dataclass(frozen=True)
class AiperfSummary:
    """The client's side of one run, in milliseconds."""

    requests: int
    errors: int
    ttft_ms_p50: float
    ttft_ms_p99: float
    ttft_ms_avg: float
    duration_s: float
    #: prompt tokens the server reported cached, over prompt tokens (`usage`, the client's view)
    usage_cached_pct: float
    aiperf_version: str
    error_kinds: tuple[str, ...] = ()


def _stat(doc: Mapping[str, Any], metric: str, key: str = "avg") -> float:
    entry = doc.get(metric)
    if not isinstance(entry, Mapping):
        return math.nan
    value = entry.get(key)
    return float(value) if isinstance(value, int | float) else math.nan


def parse_profile_export(doc: Mapping[str, Any]) -> AiperfSummary:
    """The summary of an aiperf `profile_export_aiperf.json` object. A run in which every request
    failed has no TTFT: those fields are NaN. Raises `ValueError` if `doc` is not an export."""
    if "schema_version" not in doc or "aiperf_version" not in doc:
        raise ValueError("not an aiperf profile export (no schema_version / aiperf_version)")
    errors = _stat(doc, "error_request_count")
    kinds: list[str] = []
    summary = doc.get("error_summary") or []
    if isinstance(summary, list):
        counted = 0
        for item in summary:
            if not isinstance(item, Mapping):
                continue
            counted += int(item.get("count") or 0)
            details = item.get("error_details")
            if isinstance(details, Mapping):
                kinds.append(str(details.get("message") or details.get("type") or "")[:200])
        if math.isnan(errors):
            errors = float(counted)
    ok = _stat(doc, "request_count")
    ok = 0.0 if math.isnan(ok) else ok
    return AiperfSummary(
        requests=int(ok + errors),
        errors=int(errors),
        ttft_ms_p50=_stat(doc, "time_to_first_token", "p50"),
        ttft_ms_p99=_stat(doc, "time_to_first_token", "p99"),
        ttft_ms_avg=_stat(doc, "time_to_first_token"),
        duration_s=_stat(doc, "benchmark_duration"),
        usage_cached_pct=_stat(doc, "overall_usage_prompt_cache_read_pct"),
        aiperf_version=str(doc["aiperf_version"]),
        error_kinds=tuple(k for k in kinds if k),
    )


def load_profile_export(artifact_dir: str | Path) -> AiperfSummary:
    """Read and parse `EXPORT_FILE` in `artifact_dir` (`OSError`, `ValueError` if bad)."""
    path = Path(artifact_dir) / EXPORT_FILE
    return parse_profile_export(json.loads(path.read_text()))
