"""L2 evidence bundles: one tar.gz per host, complete or absent, readable offline.

Layout (schema `agentctl.l2/1`; analysis also runs on bundles carried out of air-gapped sites,
so this is a contract):

    agentctl-l2-<host>-<YYYYMMDDTHHMMSSZ>/
      MANIFEST.json        what is inside: per item the command or path, probe status, exit
                           status, duration, bytes produced, bytes kept, truncated and
                           timed-out flags, sha256 of the file; node facts; redaction counts
      README.txt           this layout, for whoever opens the bundle without agentctl
      l1.json              the L1 health posture taken at the same time
      reboot-cause.json    the reboot-cause report computed from the same evidence
      probes/<name>.txt    one capture per probe (already redacted on the node; a cut is
                           marked inside the text with "[... agentctl: output cut ...]")
      probes/<name>.stderr.txt   only when the probe wrote to stderr

Writing goes to `.<name>.tar.gz.partial` in the target directory and is renamed only when
complete and flushed to disk: a full disk or a lost connection leaves no file that looks like a
bundle. The pseudonym mapping (when hostnames and addresses are replaced) is never inside the
bundle; it is written beside it as `<name>.mapping.json` (mode 0600) for the control side.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tarfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentctl.ctl.diag.probe import ProbeResult, ProbeSpec, ProbeStatus
from agentctl.ctl.diag.remote import Answer, DiagError

SCHEMA = "agentctl.l2/1"
#: what all captures together may weigh inside one bundle (before compression)
DEFAULT_TOTAL_CAP = 64 * 1024 * 1024
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class BundleResult:
    path: Path
    sha256: str
    size: int
    items: int
    truncated_items: int
    mapping_path: Path | None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "bytes": self.size,
            "items": self.items,
            "truncated_items": self.truncated_items,
            "mapping": str(self.mapping_path) if self.mapping_path else None,
        }


def bundle_name(host: str, at: datetime) -> str:
    return f"agentctl-l2-{_SAFE.sub('_', host)[:64]}-{at.strftime('%Y%m%dT%H%M%SZ')}"


def _readme() -> str:
    doc = __doc__ or ""
    start = doc.index("Layout")
    return doc[start:].strip() + "\n"


def apply_total_cap(
    specs: list[ProbeSpec], results: Mapping[str, ProbeResult], cap: int
) -> dict[str, ProbeResult]:
    """Captures in spec order until `cap` bytes; later ones are cut to what is left, with a
    marker, so a runaway log cannot crowd out everything after it."""
    out: dict[str, ProbeResult] = {}
    left = cap
    for spec in specs:
        r = results.get(spec.name)
        if r is None:
            continue
        data = r.output.encode()
        if len(data) > left:
            kept = data[: max(left, 0)].decode("utf-8", "ignore")
            marker = (
                f"\n[... agentctl: cut, the bundle's total cap of {cap} bytes was reached ...]\n"
            )
            text = kept + marker
            r = ProbeResult(**{**r.__dict__, "output": text, "truncated": True,
                               "sha256": hashlib.sha256(text.encode()).hexdigest()})  # fmt: skip
            data = text.encode()
        left -= len(data)
        out[spec.name] = r
    return out


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(mtime)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def write_bundle(
    out_dir: Path,
    host: str,
    specs: list[ProbeSpec],
    answer: Answer,
    *,
    l1: Mapping[str, Any],
    reboot: Mapping[str, Any],
    tool_version: str,
    total_cap: int = DEFAULT_TOTAL_CAP,
    at: datetime | None = None,
) -> BundleResult:
    """Write the bundle atomically; raises DiagError (and leaves nothing) on any OS error."""
    at = at or datetime.now(UTC)
    name = bundle_name(host, at)
    final = out_dir / f"{name}.tar.gz"
    partial = out_dir / f".{name}.tar.gz.partial"
    results = apply_total_cap(specs, answer.results, total_cap)
    items: list[dict[str, Any]] = []
    files: list[tuple[str, bytes]] = []
    for spec in specs:
        r = results.get(spec.name)
        if r is None:
            continue
        fname = f"probes/{_SAFE.sub('_', spec.name)}.txt"
        body = r.output.encode()
        files.append((fname, body))
        item = {
            "name": spec.name,
            "file": fname,
            "command": spec.describe(),
            "status": r.status.value,
            "exit_status": r.exit_status,
            "duration_s": r.duration_s,
            "bytes": r.bytes,
            "kept_bytes": len(body),
            "truncated": r.truncated,
            "timed_out": r.timed_out or r.status == ProbeStatus.TIMEOUT,
            "sha256": hashlib.sha256(body).hexdigest(),
        }
        if r.stderr:
            err = r.stderr.encode()
            files.append((f"probes/{_SAFE.sub('_', spec.name)}.stderr.txt", err))
            item["stderr_file"] = files[-1][0]
        items.append(item)
    l1_bytes = json.dumps(l1, indent=1, default=str).encode()
    rb_bytes = json.dumps(reboot, indent=1, default=str).encode()
    manifest = {
        "schema": SCHEMA,
        "tool": "agentctl",
        "version": tool_version,
        "host": host,
        "created_utc": at.isoformat(),
        "node": answer.node,
        "limits": {"total_bytes": total_cap},
        "redaction": {"counts": answer.redaction_counts, "pseudonymized": bool(answer.mapping)},
        "items": items,
        "extra_files": {
            "l1.json": hashlib.sha256(l1_bytes).hexdigest(),
            "reboot-cause.json": hashlib.sha256(rb_bytes).hexdigest(),
        },
    }
    mtime = time.time()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w:gz") as tar:
                _add(tar, f"{name}/MANIFEST.json", json.dumps(manifest, indent=1).encode(), mtime)
                _add(tar, f"{name}/README.txt", _readme().encode(), mtime)
                _add(tar, f"{name}/l1.json", l1_bytes, mtime)
                _add(tar, f"{name}/reboot-cause.json", rb_bytes, mtime)
                for fname, body in files:
                    _add(tar, f"{name}/{fname}", body, mtime)
            raw.flush()
            os.fsync(raw.fileno())
        digest = _sha256_file(partial)
        os.replace(partial, final)
        mapping_path = None
        if answer.mapping:
            mapping_path = out_dir / f"{name}.mapping.json"
            fd = os.open(mapping_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(answer.mapping, fh, indent=1)
    except OSError as e:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise DiagError(
            f"writing the bundle to {out_dir} failed: {e.strerror or e}; nothing was left behind",
            host=host,
        ) from e
    return BundleResult(
        path=final,
        sha256=digest,
        size=final.stat().st_size,
        items=len(items),
        truncated_items=sum(1 for i in items if i["truncated"]),
        mapping_path=mapping_path,
    )


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class LoadedBundle:
    manifest: dict[str, Any]
    results: dict[str, ProbeResult]
    l1: dict[str, Any]
    reboot: dict[str, Any]
    problems: list[str]


#: a bundle member larger than this is refused when reading (a bundle is bounded by design)
_MEMBER_CAP = 256 * 1024 * 1024


def load_bundle(path: Path) -> LoadedBundle:
    """Read a bundle back for offline analysis, verifying each capture's sha256 against the
    manifest (a mismatch is listed in `problems`, and that capture is left out)."""
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            return _load(path, tar)
    except (OSError, tarfile.TarError, EOFError) as e:
        raise DiagError(f"{path}: not a readable agentctl bundle ({e})") from e


def _load(path: Path, tar: tarfile.TarFile) -> LoadedBundle:
    members = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if "/" in m.name}

    def read(name: str) -> bytes | None:
        m = members.get(name)
        if m is None or not m.isfile() or m.size > _MEMBER_CAP:
            return None
        fh = tar.extractfile(m)
        return fh.read() if fh else None

    raw_manifest = read("MANIFEST.json")
    if raw_manifest is None:
        raise DiagError(f"{path}: no MANIFEST.json; not an agentctl L2 bundle")
    try:
        manifest = json.loads(raw_manifest)
    except ValueError as e:
        raise DiagError(f"{path}: MANIFEST.json is not JSON ({e})") from e
    schema = manifest.get("schema") if isinstance(manifest, dict) else None
    if schema != SCHEMA:
        raise DiagError(f"{path}: unknown bundle schema {schema!r} (this agentctl reads {SCHEMA})")
    problems: list[str] = []
    results: dict[str, ProbeResult] = {}
    for item in manifest.get("items") or []:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            problems.append("a manifest item without a name")
            continue
        body = read(str(item.get("file")))
        if body is None:
            problems.append(f"{item.get('name')}: file missing from the bundle")
            continue
        if hashlib.sha256(body).hexdigest() != item.get("sha256"):
            problems.append(f"{item.get('name')}: sha256 does not match the manifest")
            continue
        results[str(item["name"])] = ProbeResult(
            name=str(item["name"]),
            status=_status(item.get("status")),
            output=body.decode("utf-8", "replace"),
            exit_status=item.get("exit_status"),
            duration_s=float(item.get("duration_s") or 0.0),
            truncated=bool(item.get("truncated")),
            bytes=int(item.get("bytes") or 0),
            sha256=str(item.get("sha256")),
            command=str(item.get("command", "")),
            timed_out=bool(item.get("timed_out")),
        )
    l1 = _json_member(read("l1.json"))
    reboot = _json_member(read("reboot-cause.json"))
    return LoadedBundle(manifest, results, l1, reboot, problems)


def _status(value: Any) -> ProbeStatus:
    try:
        return ProbeStatus(str(value))
    except ValueError:
        return ProbeStatus.FAILED


def _json_member(data: bytes | None) -> dict[str, Any]:
    if data is None:
        return {}
    try:
        doc = json.loads(data)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
