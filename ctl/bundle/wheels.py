"""The wheelhouse as data: wheel names, which requirements the serving stack needs, pip's target
flags, and requirements.lock text. No file system or subprocess here (see wheelhouse.py).

Nodes install agentctl with `--no-deps`: the control side's own dependencies (paramiko,
SQLAlchemy, typer...) never reach a GPU node, so the lock holds agentctl's wheel and the serving
stack's dependency closure only, every line pinned by version and hash.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.parser import HeaderParser

from agentctl.ctl.bundle.manifest import Target

#: What agentctl.serving imports from third parties (pip resolves their own dependencies).
SERVING_PACKAGES = (
    "fastapi",
    "uvicorn",
    "httpx",
    "pyzmq",
    "msgpack",
    "prometheus-client",
    "pydantic",
    "pyyaml",
)

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA_MARKER = re.compile(r"\bextra\s*==")


class LockError(ValueError):
    """The wheels cannot be pinned unambiguously (two versions of one project, a bad name)."""


def normalize(name: str) -> str:
    """PEP 503 project name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class WheelName:
    project: str  # normalized
    version: str
    filename: str


def parse_wheel_filename(filename: str) -> WheelName:
    """Project and version from `{dist}-{version}(-{build})?-{py}-{abi}-{plat}.whl`."""
    if not filename.endswith(".whl"):
        raise LockError(f"{filename}: not a wheel")
    parts = filename[: -len(".whl")].split("-")
    if len(parts) not in (5, 6) or not all(parts):
        raise LockError(f"{filename}: not a valid wheel file name")
    return WheelName(normalize(parts[0]), parts[1], filename)


def render_lock(wheels: Mapping[str, str]) -> str:
    """requirements.lock text from wheel filename -> sha256.

    One line per project, `name==version` with a `--hash` per wheel file (a project may ship
    several platform wheels of one version); two versions of one project are refused because
    `==` cannot pin both.
    """
    versions: dict[str, str] = {}
    hashes: dict[str, list[str]] = {}
    for filename in sorted(wheels):
        wheel = parse_wheel_filename(filename)
        seen = versions.setdefault(wheel.project, wheel.version)
        if seen != wheel.version:
            raise LockError(
                f"{wheel.project}: wheels of two versions ({seen}, {wheel.version}) in the "
                "wheelhouse; keep one"
            )
        hashes.setdefault(wheel.project, []).append(wheels[filename])
    lines = ["# agentctl bundle: install with --no-index --require-hashes --no-deps\n"]
    for project in sorted(versions):
        flags = " ".join(f"--hash=sha256:{digest}" for digest in sorted(hashes[project]))
        lines.append(f"{project}=={versions[project]} {flags}\n")
    return "".join(lines)


def parse_lock(text: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """project -> (version, hashes) from requirements.lock text (comments skipped)."""
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        spec, *flags = line.split()
        name, sep, version = spec.partition("==")
        if not sep:
            raise LockError(f"not pinned with ==: {line!r}")
        digests = tuple(f.removeprefix("--hash=sha256:") for f in flags)
        out[normalize(name)] = (version, digests)
    return out


def requires_dist(metadata: str) -> list[str]:
    """The Requires-Dist values of a wheel's METADATA text."""
    message = HeaderParser().parsestr(metadata)
    return [str(value) for value in message.get_all("Requires-Dist") or []]


def requirement_name(requirement: str) -> str | None:
    match = _NAME.match(requirement)
    return normalize(match.group(1)) if match else None


def serving_requirements(requires: Iterable[str]) -> list[str]:
    """The serving stack's requirements, with agentctl's own version bounds where it states
    them (its Requires-Dist), and a bare name for any it does not mention."""
    wanted = {normalize(name): name for name in SERVING_PACKAGES}
    found: dict[str, str] = {}
    for req in requires:
        name = requirement_name(req)
        if name in wanted and not _EXTRA_MARKER.search(req):
            found.setdefault(name, req.strip())
    return [found.get(name, name) for name in wanted]


def is_native(target: Target, running_python: str, running_implementation: str) -> bool:
    """Whether pip can resolve for the running interpreter, with no target flags at all."""
    return (
        not target.platforms
        and target.python == running_python
        and target.implementation == running_implementation
        and target.abi in (None, target.effective_abi)
    )


def pip_download_args(
    target: Target, *, native: bool, requirements: Sequence[str], dest: str
) -> list[str]:
    """`pip download` arguments: binary wheels only, for `target`."""
    args = ["download", "--only-binary=:all:", "--dest", dest, "--progress-bar", "off"]
    if not native:
        args += [
            "--python-version",
            target.python,
            "--implementation",
            target.implementation,
            "--abi",
            target.effective_abi,
        ]
        for platform in target.platforms:
            args += ["--platform", platform]
    return [*args, *requirements]
