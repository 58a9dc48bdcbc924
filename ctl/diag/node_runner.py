"""The node side of diagnostics: run read-only probes with timeouts, bound and redact what they
print, and answer with one JSON document on stdout.

Shipped as source next to `redact.py` into a private temporary directory on the node and run
with the node's own `python3` (agentless: nothing of ours stays installed), so it is standard
library only and keeps Python 3.8 syntax. It never writes anywhere but stdout, and it refuses
to run without the redactor: nothing unredacted leaves the node.

Usage: ``python3 node_runner.py SPEC.json``. The spec: ``{"probes": [ProbeSpec...],
"parallel": 8, "redact": {"pseudonymize": false, "hostnames": [], "extra_secrets": []}}``
(see `agentctl.ctl.diag.probe`). The answer: ``{"results": [ProbeResult...], "node": {...},
"redaction": {"counts": {...}, "mapping": {...}}}``. The mapping is for the control side
only; it is never written into a bundle.
"""

from __future__ import annotations

import contextlib
import errno
import glob as globmod
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

try:  # inside the package on the control machine; beside this file on a node
    from agentctl.ctl.diag import redact as _redact
except ImportError:  # pragma: no cover - the shipped layout
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import redact as _redact  # type: ignore[import-not-found, no-redef]

_DENIED = (
    "permission denied",
    "operation not permitted",
    "must be root",
    "insufficient permissions",
    "are you root",
    "you must be root",
    "could not open device",  # ipmitool without /dev/ipmi0 access
)
Probe = dict[str, Any]


def cut(text: str, max_bytes: int, max_lines: int, keep: str) -> tuple[str, bool]:
    """`text` bounded by lines and bytes, with an explicit marker saying what was cut."""
    lines = text.splitlines(True)
    cut_lines = max(0, len(lines) - max_lines)
    if cut_lines:
        lines = lines[-max_lines:] if keep == "tail" else lines[:max_lines]
    body = "".join(lines)
    data = body.encode("utf-8", "replace")
    cut_bytes = max(0, len(data) - max_bytes)
    if cut_bytes:
        part = data[-max_bytes:] if keep == "tail" else data[:max_bytes]
        body = part.decode("utf-8", "ignore")
    if not (cut_lines or cut_bytes):
        return text, False
    end = "start" if keep == "tail" else "end"
    marker = (
        f"[... agentctl: output cut, {cut_lines} lines and {cut_bytes} bytes dropped"
        f" from the {end} ...]\n"
    )
    return (marker + body) if keep == "tail" else (
        body + ("" if body.endswith("\n") else "\n") + marker
    ), True


def _status_of_exit(code: int, stderr: str, probe: Probe) -> str:
    low = stderr.lower()
    if code == 0:
        return "ok"
    if code == 127:
        return "missing_tool"
    if code == 126 or any(m in low for m in _DENIED):
        return "permission_denied"
    if code in (probe.get("not_supported_codes") or []):
        return "not_supported"
    return "failed"


def _command(probe: Probe) -> dict[str, Any]:
    argv = list(probe["argv"]) if probe.get("argv") else ["sh", "-c", probe["shell"]]
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a timeout kills the whole group, pipelines included
            env=dict(os.environ, LC_ALL="C", LANG="C", SYSTEMD_PAGER="", PAGER="cat"),
        )
    except FileNotFoundError:
        return {"status": "missing_tool", "stderr": f"{argv[0]}: not installed"}
    except PermissionError as e:
        return {"status": "permission_denied", "stderr": str(e)}
    try:
        out, err = proc.communicate(timeout=float(probe.get("timeout", 10.0)))
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    stdout = out.decode("utf-8", "replace")
    stderr = err.decode("utf-8", "replace")
    code = proc.returncode
    status = "timeout" if timed_out else _status_of_exit(code, stderr, probe)
    return {
        "status": status,
        "output": stdout,
        "stderr": stderr,
        "exit_status": None if timed_out else code,
        "timed_out": timed_out,
    }


def _read(path: str, limit: int, keep: str) -> str:
    with open(path, "rb") as fh:
        if keep == "tail":
            try:
                size = os.fstat(fh.fileno()).st_size
                if size > limit * 2:
                    fh.seek(size - limit * 2)
            except OSError:
                pass
        return fh.read(limit * 2 + 1).decode("utf-8", "replace")


def _os_error(e: OSError) -> dict[str, Any]:
    if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENODEV, errno.ENXIO):
        return {"status": "not_supported", "stderr": str(e)}
    if e.errno in (errno.EACCES, errno.EPERM):
        return {"status": "permission_denied", "stderr": str(e)}
    return {"status": "failed", "stderr": str(e)}


def _path(probe: Probe) -> dict[str, Any]:
    try:
        text = _read(probe["path"], int(probe["max_bytes"]), probe.get("keep", "tail"))
    except OSError as e:
        return _os_error(e)
    return {"status": "ok", "output": text, "exit_status": 0}


def _glob(probe: Probe) -> dict[str, Any]:
    names = sorted(globmod.glob(probe["glob"]))
    files = [n for n in names if os.path.isfile(n)][: int(probe.get("max_files", 16))]
    if not files:
        return {"status": "not_supported", "stderr": f"nothing matches {probe['glob']}"}
    parts: list[str] = []
    denied = 0
    each = max(1024, int(probe["max_bytes"]) // len(files))
    for name in files:
        try:
            body = _read(name, each, probe.get("keep", "tail"))
        except OSError as e:
            denied += e.errno in (errno.EACCES, errno.EPERM)
            body = f"[agentctl: cannot read: {e.strerror}]\n"
        nl = "" if body.endswith("\n") else "\n"
        parts.append(f"==> {name} <==\n{body}{nl}\n")
    status = "permission_denied" if denied == len(files) else "ok"
    return {"status": status, "output": "".join(parts), "exit_status": 0}


def _listing(probe: Probe) -> dict[str, Any]:
    root = probe["listing"]
    if not os.path.isdir(root):
        return {"status": "not_supported", "stderr": f"{root}: no such directory"}
    lines: list[str] = []
    base = root.rstrip("/").count("/")
    try:
        for d, dirs, files in os.walk(root, onerror=None):
            depth = d.rstrip("/").count("/") - base
            if depth >= 2:
                dirs[:] = []
            for name in sorted(dirs) + sorted(files):
                p = os.path.join(d, name)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                kind = "l" if os.path.islink(p) else ("d" if os.path.isdir(p) else "f")
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(st.st_mtime))
                lines.append(f"{stamp} {st.st_size} {kind} {p}\n")
    except OSError as e:
        return _os_error(e)
    if not os.access(root, os.R_OK | os.X_OK):
        return {"status": "permission_denied", "stderr": f"{root}: not readable"}
    return {"status": "ok", "output": "".join(sorted(lines)), "exit_status": 0}


def run_probe(probe: Probe, redactor: Any) -> dict[str, Any]:
    """One probe, start to finish; never raises (a bug here is reported as `failed`)."""
    started = time.monotonic()
    try:
        if probe.get("argv") or probe.get("shell"):
            got = _command(probe)
        elif probe.get("path"):
            got = _path(probe)
        elif probe.get("glob"):
            got = _glob(probe)
        elif probe.get("listing"):
            got = _listing(probe)
        else:
            got = {"status": "failed", "stderr": "probe names nothing to run"}
    except Exception as e:
        got = {"status": "failed", "stderr": f"agentctl runner: {type(e).__name__}: {e}"}
    raw = got.get("output", "")
    clean = redactor.text(raw)
    output, truncated = cut(
        clean, int(probe.get("max_bytes", 524288)), int(probe.get("max_lines", 20000)),
        probe.get("keep", "tail"),
    )  # fmt: skip
    stderr, _ = cut(redactor.text(got.get("stderr", "")), 8192, 100, "tail")
    return {
        "name": probe["name"],
        "status": got["status"],
        "output": output,
        "stderr": stderr,
        "exit_status": got.get("exit_status"),
        "duration_s": round(time.monotonic() - started, 3),
        "truncated": truncated,
        "bytes": len(raw.encode("utf-8", "replace")),
        "sha256": hashlib.sha256(output.encode("utf-8")).hexdigest(),
        "command": probe.get("command", ""),
        "timed_out": bool(got.get("timed_out")),
    }


def _node() -> dict[str, Any]:
    def first(path: str) -> str | None:
        try:
            with open(path) as fh:
                return fh.read().strip()
        except OSError:
            return None

    return {
        "hostname": socket.gethostname(),
        "boot_id": first("/proc/sys/kernel/random/boot_id"),
        "uid": os.geteuid(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": ".".join(str(x) for x in sys.version_info[:3]),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: node_runner.py SPEC.json\n")
        return 2
    with open(argv[0]) as fh:
        spec = json.load(fh)
    opts = spec.get("redact") or {}
    names = list(opts.get("hostnames") or [])
    if opts.get("pseudonymize"):  # the node's own names too, whatever the inventory calls it
        names += [n for n in (socket.gethostname(), socket.getfqdn()) if n and n != "localhost"]
    redactor = _redact.Redactor(
        pseudonymize=bool(opts.get("pseudonymize")),
        hostnames=names,
        extra_secrets=list(opts.get("extra_secrets") or []),
    )
    probes = list(spec.get("probes") or [])
    node = _node()
    with ThreadPoolExecutor(max_workers=max(1, int(spec.get("parallel", 8)))) as pool:
        results = list(pool.map(lambda p: run_probe(p, redactor), probes))
    node["hostname"] = redactor.text(node["hostname"])
    doc = {
        "results": results,
        "node": node,
        "redaction": {"counts": dict(redactor.counts), "mapping": dict(redactor.mapping)},
    }
    sys.stdout.write(json.dumps(doc))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
