"""`directory`, `file`, `template` and `sync`: paths on the host, compared by content hash.

State is read with one fixed script per path (`stat` plus `sha256sum`), parsed by
`parse_path_state`. Content goes up by SFTP into a temporary file the login user owns, then
`install` (with sudo when the task has `become`) copies it beside the destination and `mv`
renames it over, so a reader never sees a half-written file and the destination keeps nothing
of a failed run.
"""

from __future__ import annotations

import difflib
import hashlib
import posixpath
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import field_validator, model_validator

from agentctl.ctl.errors import OperationError
from agentctl.ctl.playbook.ops.base import HostContext, OpArgs, Operation, Plan, octal_mode

#: biggest remote file fetched to show a diff
DIFF_LIMIT = 256 * 1024

#: paths a `state: absent` never removes, whatever the playbook says
PROTECTED = frozenset(
    {"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc", "/root",
     "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr",  # noqa: S108 "/var", "/var/lib", "/var/log",
     "/usr/local", "/etc/systemd", "/etc/systemd/system"}
)  # fmt: skip

_STATE_SCRIPT = r"""p=$1
if [ -L "$p" ]; then t=symlink
elif [ -d "$p" ]; then t=directory
elif [ -f "$p" ]; then t=file
elif [ -e "$p" ]; then t=other
else echo absent; exit 0; fi
printf '%s|%s\n' "$t" "$(stat -c '%a|%U|%G|%s' -- "$p")"
if [ "$2" = sum ] && [ "$t" = file ]; then sha256sum -- "$p" | cut -c1-64; fi
"""

_INSTALL_SCRIPT = r"""src=$1 dest=$2 mode=$3 owner=$4 group=$5
new="$dest.agentctl-new"
set -- -m "$mode"
[ -n "$owner" ] && set -- "$@" -o "$owner"
[ -n "$group" ] && set -- "$@" -g "$group"
install "$@" -- "$src" "$new" && mv -f -- "$new" "$dest" || { rm -f -- "$new"; exit 1; }
"""


@dataclass(frozen=True)
class PathState:
    kind: str  # absent | file | directory | symlink | other
    mode: str | None = None
    owner: str | None = None
    group: str | None = None
    size: int | None = None
    sha256: str | None = None


def parse_path_state(text: str) -> PathState:
    """Output of `_STATE_SCRIPT`."""
    lines = text.strip().splitlines()
    if not lines:
        raise ValueError("no output")
    if lines[0] == "absent":
        return PathState("absent")
    parts = lines[0].split("|")
    if len(parts) != 5:
        raise ValueError(f"unexpected stat output: {lines[0]!r}")
    kind, mode, owner, group, size = parts
    sha = lines[1].strip() if len(lines) > 1 else None
    return PathState(kind, mode, owner, group, int(size), sha)


def check_path(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError(f"path must be absolute, got {path!r}")
    norm = posixpath.normpath(path)
    if norm != path.rstrip("/") and path != "/":
        raise ValueError(f"path must be normalised (no '..', '.' or '//'), got {path!r}")
    return norm


def read_state(ctx: HostContext, path: str, *, with_sum: bool) -> PathState:
    res = ctx.sh(_STATE_SCRIPT, path, "sum" if with_sum else "", what=f"reading {path}")
    try:
        return parse_path_state(res.stdout)
    except ValueError as exc:
        raise OperationError(f"reading {path}: {exc}", host=ctx.name) from None


def _attr_changes(
    state: PathState, mode: str | None, owner: str | None, group: str | None
) -> list[str]:
    out = []
    if mode is not None and state.mode != mode:
        out.append(f"mode {state.mode} -> {mode}")
    if owner is not None and state.owner != owner:
        out.append(f"owner {state.owner} -> {owner}")
    if group is not None and state.group != group:
        out.append(f"group {state.group} -> {group}")
    return out


def _set_attrs(
    ctx: HostContext, path: str, mode: str | None, owner: str | None, group: str | None
) -> None:
    if mode is not None:
        ctx.check(["chmod", mode, "--", path], f"chmod {path}")
    if owner is not None or group is not None:
        spec = (owner or "") + (f":{group}" if group is not None else "")
        ctx.check(["chown", spec, "--", path], f"chown {path}")


class _PathArgs(OpArgs):
    path: str
    mode: str | None = None
    owner: str | None = None
    group: str | None = None
    state: Literal["present", "absent"] = "present"

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return check_path(v)

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, v: object) -> str | None:
        if v is None or isinstance(v, str | int):
            return octal_mode(v)
        raise ValueError("mode must be an octal string like '0755'")


def _remove(ctx: HostContext, path: str) -> None:
    if path in PROTECTED or path.count("/") < 2:
        raise OperationError(f"refusing to remove {path}: too close to /", host=ctx.name)
    ctx.check(["rm", "-rf", "--", path], f"removing {path}")


class DirectoryArgs(_PathArgs):
    #: `state: absent` removes the directory only if this relative path exists inside it (a
    #: marker that says the tree is ours), so a mistyped root is refused, not deleted
    require: str | None = None

    @field_validator("require")
    @classmethod
    def _require(cls, v: str | None) -> str | None:
        if v is not None and (v.startswith("/") or ".." in v.split("/") or not v.strip()):
            raise ValueError(f"require must be a relative path inside the directory: {v!r}")
        return v


class Directory(Operation[DirectoryArgs]):
    """A directory with a mode and owner, or (`state: absent`) removed with its contents."""

    name = "directory"
    Args = DirectoryArgs

    def plan(self, ctx: HostContext, args: DirectoryArgs) -> Plan:
        st = read_state(ctx, args.path, with_sum=False)
        if args.state == "absent":
            if st.kind == "absent":
                return Plan()
            if args.path in PROTECTED or args.path.count("/") < 2:
                raise OperationError(f"refusing to remove {args.path}", host=ctx.name)
            if args.require is not None:
                marker = posixpath.join(args.path, args.require)
                if not ctx.run(["test", "-e", marker]).ok:
                    raise OperationError(
                        f"refusing to remove {args.path}: it has no {args.require}, so it does "
                        "not look like agentctl's",
                        host=ctx.name,
                    )
            return Plan([f"remove {args.path} and everything under it"])
        if st.kind == "absent":
            mode = args.mode or "755"
            return Plan([f"create directory {args.path} (mode {mode})"], data={"create": True})
        if st.kind != "directory":
            raise OperationError(f"{args.path} exists and is a {st.kind}", host=ctx.name)
        return Plan(_attr_changes(st, args.mode, args.owner, args.group))

    def apply(self, ctx: HostContext, args: DirectoryArgs, plan: Plan) -> str | None:
        if args.state == "absent":
            _remove(ctx, args.path)
            return None
        if plan.data.get("create"):
            ctx.check(["mkdir", "-p", "--", args.path], f"mkdir {args.path}")
            _set_attrs(ctx, args.path, args.mode or "755", args.owner, args.group)
        else:
            _set_attrs(ctx, args.path, args.mode, args.owner, args.group)
        return None


class FileArgs(_PathArgs):
    content: str | None = None

    @model_validator(mode="after")
    def _content(self) -> FileArgs:
        if self.state == "present" and self.content is None:
            raise ValueError("'content' is required unless state is absent")
        return self


def content_plan(
    ctx: HostContext,
    path: str,
    content: bytes,
    mode: str | None,
    owner: str | None,
    group: str | None,
    *,
    secret: bool,
) -> Plan:
    """The plan shared by `file` and `template`: create, replace content, or fix attributes."""
    want = hashlib.sha256(content).hexdigest()
    st = read_state(ctx, path, with_sum=True)
    data: dict[str, object] = {"content": content}
    if st.kind == "absent":
        diff = None if secret else _diff(b"", content, "/dev/null", path)
        return Plan(
            [f"create {path} ({len(content)} bytes, mode {mode or '644'})"],
            diff=diff,
            data={**data, "write": True, "mode": mode or "644"},
        )
    if st.kind != "file":
        raise OperationError(f"{path} exists and is a {st.kind}", host=ctx.name)
    changes = _attr_changes(st, mode, owner, group)
    if st.sha256 == want:
        return Plan(changes, data=data)
    diff = None
    if not secret:
        old = _fetch(ctx, path) if (st.size or 0) <= DIFF_LIMIT else None
        diff = _diff(old, content, path, path) if old is not None else "(old file too big to diff)"
    return Plan(
        [f"update {path} ({st.size} -> {len(content)} bytes)", *changes],
        diff=diff,
        data={**data, "write": True, "mode": mode or st.mode or "644"},
    )


def content_apply(
    ctx: HostContext, path: str, plan: Plan, owner: str | None, group: str | None, mode: str | None
) -> None:
    content = plan.data["content"]
    assert isinstance(content, bytes)
    if not plan.data.get("write"):
        _set_attrs(ctx, path, mode, owner, group)
        return
    upload(ctx, content, path, str(plan.data["mode"]), owner, group)


def upload(
    ctx: HostContext, content: bytes, path: str, mode: str, owner: str | None, group: str | None
) -> None:
    """Put `content` at `path` atomically (SFTP to a private temp file, then install + mv)."""
    tmp = ctx.check(["mktemp"], "mktemp", become=False).stdout.strip()
    try:
        with tempfile.NamedTemporaryFile(dir=ctx.scratch, delete=False) as fh:
            fh.write(content)
            local = Path(fh.name)
        try:
            ctx.conn.put(local, tmp, mode=0o600)
        finally:
            local.unlink(missing_ok=True)
        ctx.sh(_INSTALL_SCRIPT, tmp, path, mode, owner or "", group or "", what=f"writing {path}")
    finally:
        ctx.run(["rm", "-f", "--", tmp], become=False)


def _fetch(ctx: HostContext, path: str) -> bytes | None:
    res = ctx.run(["cat", "--", path])
    return res.stdout.encode("utf-8", "surrogateescape") if res.ok else None


def _diff(old: bytes | None, new: bytes, old_name: str, new_name: str) -> str:
    try:
        a = (old or b"").decode("utf-8").splitlines(keepends=True)
        b = new.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return "(binary content differs)"
    return "".join(difflib.unified_diff(a, b, old_name, new_name, n=3))


class File(Operation[FileArgs]):
    """A file with the given content, mode and owner, or removed (`state: absent`)."""

    name = "file"
    Args = FileArgs

    def plan(self, ctx: HostContext, args: FileArgs) -> Plan:
        if args.state == "absent":
            st = read_state(ctx, args.path, with_sum=False)
            if st.kind == "absent":
                return Plan()
            if st.kind == "directory":
                raise OperationError(f"{args.path} is a directory", host=ctx.name)
            return Plan([f"remove {args.path}"])
        assert args.content is not None
        return content_plan(
            ctx,
            args.path,
            args.content.encode("utf-8"),
            args.mode,
            args.owner,
            args.group,
            secret=ctx.no_log,
        )

    def apply(self, ctx: HostContext, args: FileArgs, plan: Plan) -> str | None:
        if args.state == "absent":
            ctx.check(["rm", "-f", "--", args.path], f"removing {args.path}")
            return None
        content_apply(ctx, args.path, plan, args.owner, args.group, args.mode)
        return None


class TemplateArgs(OpArgs):
    src: str
    dest: str
    mode: str | None = None
    owner: str | None = None
    group: str | None = None

    @field_validator("dest")
    @classmethod
    def _dest(cls, v: str) -> str:
        return check_path(v)

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, v: object) -> str | None:
        if v is None or isinstance(v, str | int):
            return octal_mode(v)
        raise ValueError("mode must be an octal string like '0644'")


class Template(Operation[TemplateArgs]):
    """A file rendered from a Jinja2 template of the playbook, with the host's variables."""

    name = "template"
    Args = TemplateArgs

    def plan(self, ctx: HostContext, args: TemplateArgs) -> Plan:
        if ctx.render_template is None:
            raise OperationError("no template renderer", host=ctx.name)
        text = ctx.render_template(args.src)
        return content_plan(
            ctx,
            args.dest,
            text.encode("utf-8"),
            args.mode,
            args.owner,
            args.group,
            secret=ctx.no_log,
        )

    def apply(self, ctx: HostContext, args: TemplateArgs, plan: Plan) -> str | None:
        content_apply(ctx, args.dest, plan, args.owner, args.group, args.mode)
        return None


_LIST_SCRIPT = r"""d=$1
[ -d "$d" ] || { echo absent; exit 0; }
cd "$d" && find . -maxdepth 1 -type f -exec sha256sum {} +
"""


def parse_listing(text: str) -> dict[str, str] | None:
    """`sha256sum ./name` lines -> {name: sha256}; None when the directory is absent."""
    if text.strip() == "absent":
        return None
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        out[name.removeprefix("./")] = digest
    return out


class SyncArgs(OpArgs):
    #: a directory on the control side (files only, not recursive)
    src: str
    dest: str
    mode: str = "644"
    #: remove files in dest that src does not have
    delete: bool = False

    @field_validator("dest")
    @classmethod
    def _dest(cls, v: str) -> str:
        return check_path(v)


class Sync(Operation[SyncArgs]):
    """A flat directory (a wheelhouse, a bundle part) copied to the host by content hash."""

    name = "sync"
    Args = SyncArgs

    def _local(self, ctx: HostContext, src: str) -> dict[str, Path]:
        base = Path(src)
        if not base.is_absolute() and ctx.files_dirs:
            base = ctx.files_dirs[0] / base
        if not base.is_dir():
            raise OperationError(f"sync: {base} is not a directory here", host=ctx.name)
        return {p.name: p for p in sorted(base.iterdir()) if p.is_file()}

    def plan(self, ctx: HostContext, args: SyncArgs) -> Plan:
        local = self._local(ctx, args.src)
        res = ctx.sh(_LIST_SCRIPT, args.dest, what=f"listing {args.dest}")
        remote = parse_listing(res.stdout) or {}
        send = [n for n, p in local.items() if remote.get(n) != _sha256(p)]
        drop = sorted(set(remote) - set(local)) if args.delete else []
        changes = [f"upload {n}" for n in send] + [f"remove {n}" for n in drop]
        return Plan(changes, data={"send": send, "drop": drop, "local": local})

    def apply(self, ctx: HostContext, args: SyncArgs, plan: Plan) -> str | None:
        local: dict[str, Path] = plan.data["local"]
        ctx.check(["mkdir", "-p", "--", args.dest], f"mkdir {args.dest}")
        tmpdir = ctx.check(["mktemp", "-d"], "mktemp", become=False).stdout.strip()
        try:
            for name in plan.data["send"]:
                ctx.conn.put(local[name], posixpath.join(tmpdir, name), mode=0o600)
                ctx.sh(
                    _INSTALL_SCRIPT,
                    posixpath.join(tmpdir, name),
                    posixpath.join(args.dest, name),
                    args.mode,
                    "",
                    "",
                    what=f"installing {name}",
                )
        finally:
            ctx.run(["rm", "-rf", "--", tmpdir], become=False)
        for name in plan.data["drop"]:
            ctx.check(["rm", "-f", "--", posixpath.join(args.dest, name)], f"removing {name}")
        return f"{len(plan.data['send'])} uploaded, {len(plan.data['drop'])} removed"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
