"""Run a README set-up command verbatim, from a clean clone, on a machine made to look fresh.

    python3 tests/fresh/readme_check.py [--fresh] [--worktree] [--command N] [--keep]

A newcomer copies README command 1 into a new Debian machine or container. This check does the
same here: it clones the repository (HEAD, or with `--worktree` HEAD plus the uncommitted
changes to tracked files; never untracked or ignored files, so no `.venv`), takes the command
from README.md's "Set-up" section as written, and runs it with no stdin, an empty HOME and the
standard PATH.

`--fresh` (root, Linux) runs it in a private mount namespace whose /usr, /etc and /var are
copy-on-write overlays: whatever the command installs or changes there is thrown away
afterwards, and every program a debian:12 image lacks is hidden first. A fresh image holds
the `Priority: required` packages and apt (debootstrap's minbase, which the official images
are built from); programs from any other installed package are hidden unless README command
1 itself installs that package (its dependency closure), and so is everything in /usr/local.
That is how `sudo: command not found` was missed: this machine has sudo, a fresh image has
not.

Afterwards nothing the command started may still run: leftovers are listed, stopped, and fail
the check. Exit status: the command's, or 1 when something was left running.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: How this machine reaches a package index (proxies, CA bundles, a mirror): not tools, so a
#: fresh machine on the same network would have the same. Nothing else is passed through.
NETWORK_ENV = (
    "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
    "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_CERT",
    "PIP_DEFAULT_TIMEOUT", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
)  # fmt: skip
OVERLAID = ("/usr", "/etc", "/var")
#: tools worth naming in the summary when they are hidden
NOTABLE = ("sudo", "git", "curl", "wget", "ip", "ss", "journalctl", "systemctl", "lspci",
           "gcc", "make", "chromium", "psql", "nvidia-smi")  # fmt: skip
PROGRAM_DIRS = ("/usr/bin", "/usr/sbin", "/bin", "/sbin")


def readme_commands(readme: str) -> list[str]:
    """The fenced `sh` blocks of the "Set-up" section, in order (README's numbered commands)."""
    section = re.search(r"^## Set-up.*?$(.*?)(?=^## )", readme, re.M | re.S)
    if section is None:
        raise SystemExit("README.md has no '## Set-up' section")
    blocks = re.findall(r"^\s*```sh\n(.*?)^\s*```", section.group(1), re.M | re.S)
    return [" ".join(line.strip() for line in b.strip().splitlines()) for b in blocks]


def clone(dest: Path, worktree: bool) -> Path:
    """A clean clone of HEAD (with `worktree`: plus uncommitted changes to tracked files)."""
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(dest)], check=True)
    if worktree:
        stash = subprocess.run(["git", "-C", str(ROOT), "stash", "create"], check=True,
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
        if stash:
            subprocess.run(["git", "-C", str(dest), "fetch", "-q", str(ROOT), stash], check=True)
            subprocess.run(["git", "-C", str(dest), "checkout", "-q", stash], check=True)
    return dest


def _dpkg(*args: str) -> list[str]:
    res = subprocess.run(["dpkg-query", *args], capture_output=True, text=True, check=False)
    return res.stdout.splitlines()


def kept_packages(installs: list[str]) -> set[str]:
    """What a fresh image has once README command 1 ran: minbase plus `installs`' closure."""
    kept = {"apt"} | {
        line.split()[0] for line in _dpkg("-W", "-f", "${Package} ${Priority}\n")
        if line.endswith(" required")
    }  # fmt: skip
    closure = subprocess.run(
        ["apt-cache", "depends", "--recurse", "--installed", "--no-recommends",
         "--no-suggests", "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances",
         "apt", *installs], capture_output=True, text=True, check=False,
    ).stdout.splitlines()  # fmt: skip
    kept |= {line.split(":")[0] for line in closure if line and not line.startswith(" ")}
    return kept


def hidden_programs(installs: list[str]) -> list[str]:
    """Programs on this machine that a fresh image (after the command) would not have."""
    kept = kept_packages(installs)
    owner: dict[str, set[str]] = {}
    for pkg in _dpkg("-W", "-f", "${Package}\n"):
        for path in _dpkg("-L", pkg):
            if os.path.dirname(path) in PROGRAM_DIRS:
                owner.setdefault(os.path.basename(path), set()).add(pkg.split(":")[0])
    hidden: list[str] = []
    for d in PROGRAM_DIRS:
        if os.path.islink(d) or not os.path.isdir(d):
            continue  # merged /usr: /bin is /usr/bin
        for name in sorted(os.listdir(d)):
            if not owner.get(name, set()) & kept:  # not owned by a kept package (or by none)
                hidden.append(os.path.join(d, name))
    hidden += [os.path.join("/usr/local", e) for e in sorted(os.listdir("/usr/local"))]
    return hidden


def apt_installs(command: str) -> list[str]:
    """The packages `apt-get install` names in `command`."""
    found: list[str] = []
    for part in command.split("&&"):
        words = shlex.split(part)
        if len(words) > 2 and words[0] == "apt-get" and "install" in words:
            found += [w for w in words[words.index("install") + 1 :] if not w.startswith("-")]
    return found


def fresh_script(work: Path, hidden: list[str], inner: str) -> str:
    """sh for inside `unshare --mount`: overlays, hiding, then `inner`."""
    lines = ["set -e", "mount --make-rprivate /"]
    for d in OVERLAID:
        up, wk = work / "overlay" / d.strip("/") / "upper", work / "overlay" / d.strip("/") / "w"
        lines.append(f"mkdir -p {up} {wk}")
        lines.append(f"mount -t overlay overlay -o lowerdir={d},upperdir={up},workdir={wk} {d}")
    lines.append("rm -rf -- " + " ".join(shlex.quote(p) for p in hidden))
    lines.append(f"exec {inner}")
    return "\n".join(lines)


def leftovers(marker: str) -> list[tuple[int, str]]:
    """Processes whose command line or working directory is under `marker`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if marker in cmd or cwd.startswith(marker):
            found.append((int(entry), cmd.strip()))
    return found


def stop(procs: list[tuple[int, str]]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid, _ in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        time.sleep(2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--command", type=int, default=1, help="which README command (1)")
    ap.add_argument("--fresh", action="store_true", help="hide what a fresh image lacks (root)")
    ap.add_argument("--worktree", action="store_true", help="include uncommitted changes")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--timeout", type=float, default=1500, help="seconds (1500)")
    args = ap.parse_args(argv)

    command = readme_commands((ROOT / "README.md").read_text())[args.command - 1]
    work = Path(tempfile.mkdtemp(prefix="agentctl-fresh-"))
    log = work / "output.log"
    try:
        repo = clone(work / "agentctl", args.worktree)
        home = work / "home"
        home.mkdir()
        env = {"PATH": STANDARD_PATH, "HOME": str(home), "LANG": "C.UTF-8", "USER": "root",
               "LOGNAME": "root", "SHELL": "/bin/sh"}  # fmt: skip
        env.update({k: os.environ[k] for k in NETWORK_ENV if k in os.environ})
        if "CI" in os.environ:
            env["CI"] = os.environ["CI"]
        inner = f"sh -c {shlex.quote(command)}"
        argv_run = ["sh", "-c", inner]
        if args.fresh:
            if os.geteuid() != 0 or not shutil.which("unshare"):
                print("--fresh needs root and unshare (util-linux)", file=sys.stderr)
                return 2
            hidden = hidden_programs(apt_installs(command))
            (work / "hidden.txt").write_text("\n".join(hidden) + "\n")
            names = {os.path.basename(h) for h in hidden}
            notable = [t for t in NOTABLE if t in names]
            print(f"fresh: {len(hidden)} programs hidden (list: {work / 'hidden.txt'}), "
                  f"{', '.join(OVERLAID)} copy-on-write; hidden: {' '.join(notable)}",
                  flush=True)  # fmt: skip
            argv_run = ["unshare", "--mount", "--fork", "sh", "-c",
                        fresh_script(work, hidden, inner)]  # fmt: skip
        print(f"running README command {args.command} in {repo}:\n  {command}", flush=True)
        started = time.monotonic()
        with open(log, "wb") as out:
            try:
                rc = subprocess.run(argv_run, cwd=repo, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    timeout=args.timeout, check=False).returncode  # fmt: skip
            except subprocess.TimeoutExpired:
                rc = 124
        text = log.read_text(errors="replace")
        print(f"exit {rc} after {time.monotonic() - started:.0f}s; output in {log}")
        left = leftovers(str(work))
        if left:
            print("left running after the command ended (stopped now):")
            for pid, cmd in left:
                print(f"  {pid} {cmd[:200]}")
            stop(left)
        if rc != 0 or left:
            print("--- last lines ---\n" + "\n".join(text.splitlines()[-60:]))
        return rc if rc != 0 else (1 if left else 0)
    finally:
        stop(leftovers(str(work)))
        if not args.keep:
            subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)


if __name__ == "__main__":
    sys.exit(main())
