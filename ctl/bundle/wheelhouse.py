"""Filling wheels/: pip download for the target, pip wheel for agentctl, or an existing
wheelhouse copied as it is; then requirements.lock from the hashes of what is there.

pip runs as `python -m pip` of the interpreter running agentctl, with its output streamed line
by line to a callback (progress on stderr) and its tail kept for the error message.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agentctl.ctl.bundle.hashing import sha256_file
from agentctl.ctl.bundle.layout import LOCK
from agentctl.ctl.bundle.manifest import Target
from agentctl.ctl.bundle.wheels import (
    LockError,
    parse_wheel_filename,
    pip_download_args,
    render_lock,
    requirement_name,
    requires_dist,
    serving_requirements,
)
from agentctl.ctl.errors import AgentctlError, UsageError

LineSink = Callable[[str], None]


def run_pip(args: Sequence[str], on_line: LineSink, *, what: str) -> None:
    """`python -m pip ARGS`; AgentctlError with pip's last lines if it fails."""
    argv = [sys.executable, "-m", "pip", *args]
    env = dict(os.environ, PIP_NO_INPUT="1", PYTHONUNBUFFERED="1")
    tail: collections.deque[str] = collections.deque(maxlen=15)
    try:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
    except OSError as exc:
        raise AgentctlError(f"{what}: cannot run pip: {exc}") from None
    assert proc.stdout is not None
    with proc:
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                tail.append(line)
                on_line(line)
    if proc.returncode != 0:
        raise AgentctlError(
            f"{what} failed (pip exit {proc.returncode}):\n" + "\n".join(tail),
            hint="offline? pass --wheelhouse DIR with the wheels already downloaded",
        )


def find_source_tree() -> Path | None:
    """The checkout agentctl runs from (editable install), or None for an installed wheel."""
    import agentctl.ctl

    root = Path(agentctl.ctl.__file__).resolve().parent.parent
    project = root / "pyproject.toml"
    try:
        name = tomllib.loads(project.read_text())["project"]["name"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return None
    return root if name == "agentctl" else None


def build_agentctl_wheel(source: Path, dest: Path, on_line: LineSink) -> Path:
    """`pip wheel --no-deps` of the source tree into `dest`; the wheel's path."""
    with tempfile.TemporaryDirectory(prefix="agentctl-wheel-") as tmp:
        run_pip(
            ["wheel", "--no-deps", "--progress-bar", "off", "--wheel-dir", tmp, str(source)],
            on_line,
            what="building agentctl's wheel",
        )
        built = sorted(Path(tmp).glob("agentctl-*.whl"))
        if len(built) != 1:
            raise AgentctlError(f"pip wheel made {len(built)} agentctl wheels, expected 1")
        return Path(shutil.copy2(built[0], dest / built[0].name))


#: files of an installed distribution that are not part of its wheel
_INSTALL_ONLY = ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")


def repack_installed(dest: Path, name: str = "agentctl") -> Path:
    """A wheel rebuilt from the installed distribution's files (its RECORD), for an agentctl
    installed from a wheel (no source tree): byte-identical modules, a fresh RECORD. Compiled
    caches and installer bookkeeping are left out."""
    from importlib.metadata import distributions

    import agentctl.ctl

    running = Path(agentctl.ctl.__file__).resolve()
    # the distribution that owns the code running now (a stray egg-info in the working
    # directory, or a second install, must not be the one repacked)
    dist = next(
        (
            d
            for d in distributions(name=name)
            if any(
                f.parts[-2:] == ("ctl", "__init__.py")
                and Path(str(f.locate())).resolve() == running
                for f in d.files or ()
            )
        ),
        None,
    )
    if dist is None:
        raise UsageError(
            f"cannot find the installed files of the running {name}",
            hint="pass --agentctl-wheel PATH",
        )
    files = [f for f in dist.files or () if "__pycache__" not in f.parts]
    info = next((f.parts[0] for f in files if f.parts[0].endswith(".dist-info")), None)
    if info is None or not any(f.parts[-1] == "WHEEL" for f in files):
        raise UsageError(f"{name}: installed without wheel metadata; pass --agentctl-wheel PATH")
    version = dist.version
    out = dest / f"{name}-{version}-py3-none-any.whl"
    record: list[str] = []
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(files, key=str):
            rel = f.as_posix()
            if rel.startswith("..") or rel.startswith("/"):  # scripts outside site-packages
                continue
            if f.parts[0] == info and f.parts[-1] in _INSTALL_ONLY:
                continue
            data = Path(str(f.locate())).read_bytes()
            zf.writestr(rel, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{rel},sha256={digest.decode()},{len(data)}")
        record.append(f"{info}/RECORD,,")
        zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return out


def wheel_metadata(wheel: Path) -> str:
    """The METADATA text of a wheel file."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = [n for n in zf.namelist() if n.count("/") == 1]
            meta = [n for n in names if n.endswith(".dist-info/METADATA")]
            if len(meta) != 1:
                raise UsageError(f"{wheel}: no single .dist-info/METADATA in it")
            return zf.read(meta[0]).decode("utf-8")
    except (OSError, zipfile.BadZipFile) as exc:
        raise UsageError(f"{wheel}: not a readable wheel: {exc}") from None


@dataclass(frozen=True)
class Wheelhouse:
    wheels: dict[str, str]  # filename -> sha256
    agentctl_wheel: str
    requirements: tuple[str, ...]
    missing: tuple[str, ...]  # requirement names no wheel provides (reused wheelhouse only)


def fill_wheels(
    wheels_dir: Path,
    *,
    target: Target,
    native: bool,
    agentctl_wheel: Path | None,
    wheelhouse: Path | None,
    extra_requirements: Path | None,
    on_line: LineSink,
    on_step: LineSink,
) -> Wheelhouse:
    """Put agentctl's wheel and the serving stack's wheels in `wheels_dir`; write the lock."""
    wheels_dir.mkdir(parents=True, exist_ok=True)
    if agentctl_wheel is not None:
        own = Path(shutil.copy2(agentctl_wheel, wheels_dir / agentctl_wheel.name))
    elif wheelhouse is not None and (found := sorted(wheelhouse.glob("agentctl-*.whl"))):
        own = found[-1]
    else:
        source = find_source_tree()
        if source is None:
            on_step("repacking the installed agentctl into a wheel")
            own = repack_installed(wheels_dir)
        else:
            on_step(f"building agentctl's wheel from {source}")
            own = build_agentctl_wheel(source, wheels_dir, on_line)
    if parse_wheel_filename(own.name).project != "agentctl":
        raise UsageError(f"{own.name}: not an agentctl wheel")
    requirements = serving_requirements(requires_dist(wheel_metadata(own)))

    if wheelhouse is not None:
        on_step(f"copying wheels from {wheelhouse}")
        for wheel in sorted(wheelhouse.glob("*.whl")):
            is_own = parse_wheel_filename(wheel.name).project == "agentctl"
            if is_own and (agentctl_wheel is not None or wheel != own):
                continue  # exactly one agentctl wheel, the chosen one
            shutil.copy2(wheel, wheels_dir / wheel.name)
    else:
        reqs = list(requirements)
        if extra_requirements is not None:
            reqs += ["-r", str(extra_requirements)]
        on_step(f"pip download: {len(requirements)} serving requirements for {_label(target)}")
        run_pip(
            pip_download_args(target, native=native, requirements=reqs, dest=str(wheels_dir)),
            on_line,
            what="pip download",
        )

    leftovers = [p.name for p in wheels_dir.iterdir() if not p.name.endswith(".whl")]
    if leftovers:  # an sdist would need a compiler on the node; --only-binary prevents it
        raise AgentctlError(f"wheels/ holds non-wheel files: {', '.join(sorted(leftovers))}")
    digests = {p.name: sha256_file(p) for p in sorted(wheels_dir.glob("*.whl"))}
    try:
        lock = render_lock(digests)
    except LockError as exc:
        raise UsageError(str(exc)) from None
    (wheels_dir.parent / LOCK).write_text(lock)
    have = {parse_wheel_filename(name).project for name in digests}
    wanted = [requirement_name(r) for r in requirements]
    if extra_requirements is not None and wheelhouse is not None:
        wanted += [requirement_name(r) for r in _requirement_lines(extra_requirements)]
    missing = tuple(sorted({n for n in wanted if n and n not in have}))
    return Wheelhouse(digests, own.name, tuple(requirements), missing)


def _requirement_lines(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read --requirements {path}: {exc.strerror or exc}") from None
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def _label(target: Target) -> str:
    return f"{target.implementation}{target.python} {target.platform}"
