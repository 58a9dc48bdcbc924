"""`pip`: a virtual environment with packages, from an index or a wheelhouse on the host.

pip has no cheap "would this change anything" question, so the operation records a digest of
its inputs (its arguments, the requirements file and every file of the wheelhouse, hashed on
the host) in the venv after a successful install; the next run compares digests and does
nothing when they match. A changed wheel (same version, new build) changes the digest, so a
redeploy of a rebuilt agentctl wheel is not silently skipped.
"""

from __future__ import annotations

import hashlib
import json
import posixpath

from pydantic import field_validator, model_validator

from agentctl.ctl.errors import OperationError
from agentctl.ctl.playbook.ops.base import HostContext, OpArgs, Operation, Plan, describe_failure
from agentctl.ctl.playbook.ops.files import check_path

MARKER = ".agentctl-pip"

_STATE = r"""venv=$1 req=$2 links=$3
if [ -x "$venv/bin/python" ]; then echo "venv=yes"; else echo "venv=no"; fi
if [ -f "$venv/.agentctl-pip" ]; then echo "marker=$(cat -- "$venv/.agentctl-pip")"; fi
inputs=$( { if [ -n "$req" ]; then sha256sum -- "$req"; fi
  if [ -n "$links" ] && [ -d "$links" ]; then (cd -- "$links" && sha256sum -- *); fi
} 2>&1 | sha256sum | cut -c1-64)
echo "inputs=$inputs"
"""


def parse_state(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    if "venv" not in out or "inputs" not in out:
        raise ValueError(f"unexpected output: {text[:200]!r}")
    return out


class PipArgs(OpArgs):
    venv: str
    #: the interpreter that creates the venv
    python: str = "python3"
    packages: list[str] = []
    #: a requirements file on the host
    requirements: str | None = None
    #: a wheelhouse directory on the host (`--find-links`)
    find_links: str | None = None
    no_index: bool = False
    require_hashes: bool = False
    no_deps: bool = False
    index_url: str | None = None
    system_site_packages: bool = False

    @field_validator("venv")
    @classmethod
    def _venv(cls, v: str) -> str:
        return check_path(v)

    @model_validator(mode="after")
    def _what(self) -> PipArgs:
        if not self.packages and self.requirements is None:
            raise ValueError("give 'packages' or 'requirements'")
        if self.no_index and self.find_links is None:
            raise ValueError("'no_index' needs 'find_links' (a wheelhouse)")
        for p in self.packages:
            if p.startswith("-"):
                raise ValueError(f"package {p!r} looks like an option")
        return self

    def digest(self, inputs: str) -> str:
        doc = json.dumps([self.model_dump(mode="json"), inputs], sort_keys=True)
        return hashlib.sha256(doc.encode()).hexdigest()

    def install_argv(self) -> list[str]:
        argv = [posixpath.join(self.venv, "bin", "python"), "-m", "pip", "install",
                "--disable-pip-version-check", "--no-input"]  # fmt: skip
        if self.no_index:
            argv.append("--no-index")
        if self.find_links is not None:
            argv += ["--find-links", self.find_links]
        if self.index_url is not None:
            argv += ["--index-url", self.index_url]
        if self.require_hashes:
            argv.append("--require-hashes")
        if self.no_deps:
            argv.append("--no-deps")
        if self.requirements is not None:
            argv += ["-r", self.requirements]
        return argv + list(self.packages)


class Pip(Operation[PipArgs]):
    name = "pip"
    Args = PipArgs

    def plan(self, ctx: HostContext, args: PipArgs) -> Plan:
        res = ctx.sh(
            _STATE, args.venv, args.requirements or "", args.find_links or "", what="reading venv"
        )
        try:
            st = parse_state(res.stdout)
        except ValueError as exc:
            raise OperationError(f"pip: {exc}", host=ctx.name) from None
        digest = args.digest(st["inputs"])
        changes = []
        if st["venv"] != "yes":
            changes.append(f"create venv {args.venv}")
        if st.get("marker") != digest:
            what = args.requirements or " ".join(args.packages)
            changes.append(f"pip install {what}" + (" (offline)" if args.no_index else ""))
        return Plan(changes, data={"digest": digest, "venv": st["venv"] == "yes"})

    def apply(self, ctx: HostContext, args: PipArgs, plan: Plan) -> str | None:
        if not plan.data["venv"]:
            argv = [args.python, "-m", "venv"]
            if args.system_site_packages:
                argv.append("--system-site-packages")
            ctx.check([*argv, args.venv], f"creating venv {args.venv}", timeout=300)
        res = ctx.run(args.install_argv(), timeout=1800, env={"PIP_NO_INPUT": "1"})
        if not res.ok:
            raise OperationError(f"pip install failed: {describe_failure(res, 800)}", host=ctx.name)
        ctx.write_marker(
            posixpath.join(args.venv, MARKER), str(plan.data["digest"]), "recording the install"
        )
        return None
