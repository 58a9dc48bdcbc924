"""Replays recorded NVML calls, and records them from a real GPU.

A fixture is JSON: `{"provenance": ..., "calls": [{"fn", "args", "return" | "error"}]}`, where
`error` is a pynvml error name (`NotSupported` for `NVMLError_NotSupported`) and GPU handles in
`args` are written `"gpu<index>"`. The exception classes are pynvml's own (pynvml imports
without a GPU; only nvmlInit fails), so a source's `except` clauses run for real.

To record on a GPU machine (nvidia-ml-py installed):

    python -c "import json, pynvml; from agentctl.collectors.gpu import replay; \\
        print(json.dumps(replay.record(pynvml), indent=1))" > tests/fixtures/gpu/nvml_<gpu>.json
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any


class ReplayMissError(LookupError):
    """The code asked for a call the fixture does not hold: a gap in the fixture, not NVML."""


def _key(fn: str, args: list[Any]) -> str:
    return json.dumps([fn, args])


def _decode(v: Any) -> Any:
    if isinstance(v, dict):
        return SimpleNamespace(**{k: _decode(x) for k, x in v.items()})
    if isinstance(v, list):
        return [_decode(x) for x in v]
    return v


class ReplayNvml:
    """Stands in for the pynvml module: `nvml*` functions replay, everything else is pynvml's."""

    def __init__(self, calls: list[dict[str, Any]]) -> None:
        self._real: Any = importlib.import_module("pynvml")
        self._calls = {_key(c["fn"], c.get("args", [])): c for c in calls}
        self.asked: list[str] = []

    @classmethod
    def from_file(cls, path: str | Path) -> ReplayNvml:
        return cls(json.loads(Path(path).read_text())["calls"])

    def _call(self, fn: str, args: tuple[Any, ...]) -> Any:
        enc = [a.token if isinstance(a, _Handle) else a for a in args]
        key = _key(fn, enc)
        self.asked.append(key)
        if key not in self._calls:
            if fn in ("nvmlInit", "nvmlShutdown"):
                return None
            raise ReplayMissError(key)
        c = self._calls[key]
        if "error" in c:
            raise getattr(self._real, f"NVMLError_{c['error']}")()
        if fn == "nvmlDeviceGetHandleByIndex":
            return _Handle(str(c["return"]))
        return _decode(c["return"])

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._real, name, None)
        if name.startswith("nvml") and (real is None or callable(real)):

            def replayed(*args: Any) -> Any:
                return self._call(name, args)

            return replayed
        if real is None:
            raise AttributeError(name)
        return real


class _Handle:
    def __init__(self, token: str) -> None:
        self.token = token


def _encode(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_encode(x) for x in v]
    names = [f[0] for f in getattr(v, "_fields_", [])]
    if names:
        return {k: _encode(getattr(v, k)) for k in names}
    return repr(v)


class _Recorder:
    """Wraps the real module; every nvml* call is passed through and written down."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls: list[dict[str, Any]] = []
        self.tokens: dict[int, str] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.real, name)
        if not (name.startswith("nvml") and callable(attr)):
            return attr

        def recorded(*args: Any) -> Any:
            return self._run(name, attr, args)

        return recorded

    def _run(self, name: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        real_args = [a.real if isinstance(a, _RecHandle) else a for a in args]
        enc = [a.token if isinstance(a, _RecHandle) else _encode(a) for a in args]
        entry: dict[str, Any] = {"fn": name, "args": enc}
        self.calls.append(entry)
        try:
            out = fn(*real_args)
        except self.real.NVMLError as e:
            entry["error"] = type(e).__name__.removeprefix("NVMLError_")
            raise
        if name == "nvmlDeviceGetHandleByIndex":
            entry["return"] = f"gpu{args[0]}"
            return _RecHandle(f"gpu{args[0]}", out)
        entry["return"] = _encode(out)
        return out


class _RecHandle:
    def __init__(self, token: str, real: Any) -> None:
        self.token = token
        self.real = real


def record(pynvml_module: Any, source: Any = None) -> dict[str, Any]:
    """Runs one NvmlSource sample against the real module and returns the fixture dict."""
    from agentctl.collectors.gpu.nvml import NvmlSource

    rec = _Recorder(pynvml_module)
    (source or NvmlSource)(rec).sample()
    return {"provenance": "recorded by agentctl.collectors.gpu.replay.record", "calls": rec.calls}
