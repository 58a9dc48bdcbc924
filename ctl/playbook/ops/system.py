"""`package` (apt/dpkg, with a pinned version and a hold) and `user` (a system account).

The NVIDIA driver must not move under a running fleet (an unattended upgrade of one library
package gives "Driver/library version mismatch"), so a package can be pinned to a version and
held. State comes from `dpkg-query` and `apt-mark showhold`, parsed by pure functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import field_validator

from agentctl.ctl.errors import OperationError
from agentctl.ctl.playbook.ops.base import HostContext, OpArgs, Operation, Plan

_PKG = re.compile(r"^[a-z0-9][a-z0-9+.\-]+(:[a-z0-9]+)?$")
_VERSION = re.compile(r"^[A-Za-z0-9.+~:\-]+$")
_USER = re.compile(r"^[a-z_][a-z0-9_\-]{0,31}$")

APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "NEEDRESTART_MODE": "a"}


@dataclass(frozen=True)
class PackageState:
    installed: bool
    version: str | None
    held: bool


def parse_dpkg_query(text: str, held_text: str) -> PackageState:
    """`dpkg-query -W -f '${db:Status-Abbrev}|${Version}'` and `apt-mark showhold NAME`."""
    line = text.strip()
    installed, version = False, None
    if line:
        status, _, ver = line.partition("|")
        # "ii " installed; "rc " removed with config left; "iU"/"iF" half-done count as not ok
        installed = status.strip() == "ii"
        version = ver.strip() or None
    return PackageState(installed, version if installed else None, bool(held_text.strip()))


class PackageArgs(OpArgs):
    name: str
    version: str | None = None
    hold: bool = False
    state: Literal["present", "absent"] = "present"
    update_cache: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _PKG.match(v):
            raise ValueError(f"not a Debian package name: {v!r}")
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: str | None) -> str | None:
        if v is not None and not _VERSION.match(v):
            raise ValueError(f"not a Debian version: {v!r}")
        return v


class Package(Operation[PackageArgs]):
    name = "package"
    Args = PackageArgs

    def _state(self, ctx: HostContext, name: str) -> PackageState:
        q = ctx.run(
            ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}|${Version}", name], become=False
        )
        if q.exit_status == 127:
            raise OperationError(
                "dpkg-query not found: packages need Debian or Ubuntu", host=ctx.name
            )
        held = ctx.run(["apt-mark", "showhold", name], become=False)
        return parse_dpkg_query(q.stdout if q.ok else "", held.stdout if held.ok else "")

    def plan(self, ctx: HostContext, args: PackageArgs) -> Plan:
        st = self._state(ctx, args.name)
        changes: list[str] = []
        if args.state == "absent":
            if st.held:
                changes.append(f"unhold {args.name}")
            if st.installed:
                changes.append(f"remove {args.name} {st.version}")
            return Plan(changes, data={"state": st})
        if not st.installed:
            changes.append(f"install {args.name}" + (f"={args.version}" if args.version else ""))
        elif args.version is not None and st.version != args.version:
            if st.held and not args.hold:
                changes.append(f"unhold {args.name}")
            changes.append(f"change {args.name} {st.version} -> {args.version}")
        if args.hold and not st.held:
            changes.append(f"hold {args.name}")
        return Plan(changes, data={"state": st})

    def apply(self, ctx: HostContext, args: PackageArgs, plan: Plan) -> str | None:
        st: PackageState = plan.data["state"]
        if args.state == "absent":
            if st.held:
                ctx.check(["apt-mark", "unhold", args.name], f"unhold {args.name}")
            if st.installed:
                ctx.check(
                    ["apt-get", "remove", "-y", args.name], f"remove {args.name}", env=APT_ENV
                )
            return None
        need = not st.installed or (args.version is not None and st.version != args.version)
        if need:
            if st.held:
                ctx.check(["apt-mark", "unhold", args.name], f"unhold {args.name}")
            if args.update_cache:
                ctx.check(["apt-get", "update"], "apt-get update", env=APT_ENV, timeout=600)
            spec = args.name + (f"={args.version}" if args.version else "")
            ctx.check(
                ["apt-get", "install", "-y", "--no-install-recommends",
                 "--allow-downgrades", "--allow-change-held-packages", spec],
                f"install {spec}",
                env=APT_ENV,
                timeout=1800,
            )  # fmt: skip
        if args.hold:
            ctx.check(["apt-mark", "hold", args.name], f"hold {args.name}")
        after = self._state(ctx, args.name)
        if not after.installed or (args.version and after.version != args.version):
            raise OperationError(
                f"{args.name} is {after.version or 'not installed'} after install", host=ctx.name
            )
        return None


@dataclass(frozen=True)
class UserState:
    exists: bool
    uid: int | None = None
    home: str | None = None
    shell: str | None = None


def parse_getent(text: str) -> UserState:
    """One `getent passwd NAME` line (empty: no such user)."""
    line = text.strip()
    if not line:
        return UserState(False)
    parts = line.split(":")
    if len(parts) != 7 or not parts[2].isascii() or not parts[2].isdigit():
        raise ValueError(f"unexpected getent output: {line!r}")
    return UserState(True, int(parts[2]), parts[5], parts[6])


class UserArgs(OpArgs):
    name: str
    system: bool = True
    home: str | None = None
    shell: str = "/usr/sbin/nologin"
    create_home: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _USER.match(v):
            raise ValueError(f"not a valid user name: {v!r}")
        return v


class User(Operation[UserArgs]):
    """A (system) account the services run as; existing accounts get their shell/home fixed."""

    name = "user"
    Args = UserArgs

    def plan(self, ctx: HostContext, args: UserArgs) -> Plan:
        res = ctx.run(["getent", "passwd", args.name], become=False)
        try:
            st = parse_getent(res.stdout if res.ok else "")
        except ValueError as exc:
            raise OperationError(f"user: {exc}", host=ctx.name) from None
        if not st.exists:
            return Plan([f"create {'system ' if args.system else ''}user {args.name}"])
        changes = []
        if st.shell != args.shell:
            changes.append(f"shell {st.shell} -> {args.shell}")
        if args.home is not None and st.home != args.home:
            changes.append(f"home {st.home} -> {args.home}")
        return Plan(changes, data={"exists": True})

    def apply(self, ctx: HostContext, args: UserArgs, plan: Plan) -> str | None:
        if not plan.data.get("exists"):
            argv = ["useradd", "--shell", args.shell]
            if args.system:
                argv.append("--system")
            if args.home is not None:
                argv += ["--home-dir", args.home]
            argv.append("--create-home" if args.create_home else "--no-create-home")
            ctx.check([*argv, args.name], f"useradd {args.name}")
            return None
        argv = ["usermod", "--shell", args.shell]
        if args.home is not None:
            argv += ["--home", args.home]
        ctx.check([*argv, args.name], f"usermod {args.name}")
        return None
