"""The peers' environments: one virtualenv per peer and version, outside the clone, cached.

`bench live` runs other people's programs (aiperf as the client, sglang-router as a router to
compare with). They come from PyPI with dependencies of their own (aiperf pulls in
transformers), so each gets a venv of its own under `~/.cache/agentctl/peers/<name>-<version>/`
(`$XDG_CACHE_HOME` honoured; `--peers-dir` to put them elsewhere), never in agentctl's
environment or the repository. A venv counts as installed once its marker file is written, at
the very end of a successful install: a half-finished install is redone, never trusted.

Nothing is installed unasked: `find_env` says what is missing and how to install it
(`--install-peers`); `install_env` does it and raises `PeerUnavailable` with pip's own last
lines when it cannot (an air-gapped host), which the command turns into exit code 2.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

__all__ = [
    "PEERS",
    "PeerEnv",
    "PeerSpec",
    "PeerUnavailable",
    "default_peers_dir",
    "find_env",
    "install_commands",
    "install_env",
]

MARKER = "agentctl-peer.json"


class PeerUnavailable(RuntimeError):
    """A peer is not installed, or cannot be; the message says why and what to do."""


@dataclass(frozen=True)
class PeerSpec:
    """A peer program: its PyPI requirement (pinned) and a module that proves it imports."""

    name: str
    version: str
    module: str
    #: the console script or module the benchmark runs
    entry: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def dirname(self) -> str:
        return f"{self.name}-{self.version}"


PEERS: dict[str, PeerSpec] = {
    "aiperf": PeerSpec("aiperf", "0.13.0", "aiperf", "aiperf"),
    "sglang-router": PeerSpec(
        "sglang-router", "0.3.2", "sglang_router", "sglang_router.launch_router"
    ),
}


def default_peers_dir() -> Path:
    """`$XDG_CACHE_HOME/agentctl/peers`, else `~/.cache/agentctl/peers`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "agentctl" / "peers"


@dataclass(frozen=True)
class PeerEnv:
    """An installed peer's venv."""

    spec: PeerSpec
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def bin(self, name: str) -> Path:
        return self.root / "bin" / name

    @property
    def hf_home(self) -> Path:
        """aiperf's Hugging Face cache, holding our offline tokenizer (`peer_tokenizer.py`)."""
        return self.root / "hf"

    @property
    def tokenizer_json(self) -> Path:
        return self.root / "tokenizer" / "tokenizer.json"


def env_root(spec: PeerSpec, peers_dir: Path) -> Path:
    return peers_dir / spec.dirname


def install_hint(spec: PeerSpec, peers_dir: Path) -> str:
    return (
        f"{spec.requirement} is not installed in {env_root(spec, peers_dir)}: run "
        f"`agentctl bench live --install-peers` once (it makes a venv there and pip-installs "
        f"{spec.requirement} from PyPI), or point --peers-dir at a directory that has it"
    )


def find_env(spec: PeerSpec, peers_dir: Path) -> PeerEnv:
    """The installed env, or `PeerUnavailable` saying how to install it."""
    root = env_root(spec, peers_dir)
    env = PeerEnv(spec, root)
    marker = root / MARKER
    try:
        meta = json.loads(marker.read_text())
    except (OSError, ValueError):
        raise PeerUnavailable(install_hint(spec, peers_dir)) from None
    if meta.get("requirement") != spec.requirement or not env.python.exists():
        raise PeerUnavailable(install_hint(spec, peers_dir))
    return env


def install_commands(spec: PeerSpec, root: Path, python: str = sys.executable) -> list[list[str]]:
    """The commands that make `root` a venv with `spec` installed (pure: for tests and
    the message of a failed install)."""
    vpy = str(root / "bin" / "python")
    pip = [vpy, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    cmds = [[python, "-m", "venv", str(root)], [*pip, "install", "-q", spec.requirement]]
    if spec.name == "aiperf":
        script = str(Path(__file__).with_name("peer_tokenizer.py"))
        cmds.append([vpy, script, str(root / "tokenizer")])
    return cmds


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def install_tokenizer(env: PeerEnv) -> None:
    """Lay our tokenizer out as a Hugging Face cache entry `TOKENIZER_REPO` under `hf_home`
    (aiperf's offline loader finds only that layout; see `aiperf_client`)."""
    import hashlib

    from agentctl.serving.bench.aiperf_client import TOKENIZER_REPO

    src = env.tokenizer_json.parent
    # a 40-hex "commit" name, as the cache layout wants (not a security use)
    digest = hashlib.sha1(env.tokenizer_json.read_bytes(), usedforsecurity=False).hexdigest()
    repo = env.hf_home / "hub" / ("models--" + TOKENIZER_REPO.replace("/", "--"))
    snap = repo / "snapshots" / digest
    snap.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        shutil.copyfile(f, snap / f.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(digest)


def install_env(
    spec: PeerSpec, peers_dir: Path, *, log: TextIO | None = None, timeout_s: float = 1800.0
) -> PeerEnv:
    """Make the venv and install `spec` (replacing a half-made one); `PeerUnavailable` with
    pip's last lines when it fails. `log`: a text stream for progress lines (stderr)."""
    root = env_root(spec, peers_dir)
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    for cmd in install_commands(spec, root):
        if log is not None:
            print(f"# {' '.join(cmd)}", file=log, flush=True)
        try:
            res = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            shutil.rmtree(root, ignore_errors=True)
            raise PeerUnavailable(f"cannot install {spec.requirement}: {exc}") from None
        if res.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            raise PeerUnavailable(
                f"cannot install {spec.requirement} into {root} (is PyPI reachable?); "
                f"`{' '.join(cmd[:4])} ...` exited {res.returncode}:\n"
                + _tail(res.stderr or res.stdout)
            )
    env = PeerEnv(spec, root)
    if spec.name == "aiperf":
        install_tokenizer(env)
    meta = {"name": spec.name, "version": spec.version, "requirement": spec.requirement}
    (root / MARKER).write_text(json.dumps(meta) + "\n")
    return env
