"""`agentctl dashboard serve`, `agentctl users ...`, `agentctl watch`: the two windows on the
store, and who may look through them.

The dashboard packages never reach a node: this module hands them `FleetActions`, which runs
L1 and drain/undrain through the same code as `agentctl diag l1` and `agentctl drain`.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from agentctl.ctl.cli.main import state
from agentctl.ctl.cli.output import plain
from agentctl.ctl.errors import ConfigError, UsageError
from agentctl.ctl.fanout import FanoutOptions
from agentctl.dashboard.actions import ActionResult

if TYPE_CHECKING:  # the store, SSH, the web app and the TUI load when a command runs
    from agentctl.ctl.cli.state import State

#: the store's `ROLES`, spelled out for `users add --help`, which must not import the store
#: (tests/cli/test_startup.py keeps the two equal)
USER_ROLES = ("viewer", "operator", "admin")

users_app = typer.Typer(help="Dashboard users and API tokens.", no_args_is_help=True)
dashboard_app = typer.Typer(help="The web dashboard.", no_args_is_help=True)
SECRET_FILE = "dashboard-session.key"  # noqa: S105 - a file name, not a secret


class FleetActions:
    """Operator actions for the dashboards, on the control plane's own connections. One action
    at a time: they are rare, and the CLI state they share is not built for concurrency."""

    def __init__(self, st: State) -> None:
        self.st = st
        self._lock = threading.Lock()

    def _known(self, node: str) -> None:
        if node not in self.st.inventory().hosts:
            raise UsageError(f"{node!r} is not in the inventory")

    def run_l1(self, node: str) -> ActionResult:
        from agentctl.ctl.cli.diag_cmd import l1_task, store_l1, thresholds_of
        from agentctl.ctl.connect import Connections
        from agentctl.ctl.runner import run_recorded

        with self._lock:
            self._known(node)
            st = self.st
            conns = Connections(st.settings(), st.inventory())
            task = l1_task(st, thresholds_of(st), False)
            report = run_recorded(
                st.store(), kind="diag-l1", hosts=st.select([node]), task=task,
                connect=conns.connect, options=FanoutOptions(forks=1, connect_retries=0),
                command="diag l1 (dashboard)", selection=node, run_options={"from": "dashboard"},
            )  # fmt: skip
            store_l1(st.store(), report)
            o = report.recap.outcomes[0]
            if isinstance(o.data, dict) and "verdict" in o.data:
                data = {"run_id": report.run_id, "verdict": o.data["verdict"]}
                return ActionResult(True, f"L1 on {node}: {o.data['summary']}", data)
            why = o.error.message if o.error else o.message or o.status.value
            data = {"run_id": report.run_id}
            return ActionResult(False, f"L1 on {node} did not run: {why}", data)

    def _drain(self, node: str, drained: bool) -> ActionResult:
        from agentctl.ctl.cli.playbook_cmd import _drain_pass

        with self._lock:
            self._known(node)
            word = "drain" if drained else "undrain"
            try:
                rep = _drain_pass(self.st, [node], drained, False, None, emit=False)
            except UsageError as e:
                return ActionResult(False, f"{word} {node}: {e.message}")
            ok = rep.recap.ok
            said = f"{word} {node}: {'done' if ok else 'failed'} (run {rep.run_id})"
            return ActionResult(ok, said, {"run_id": rep.run_id})

    def drain(self, node: str) -> ActionResult:
        return self._drain(node, True)

    def undrain(self, node: str) -> ActionResult:
        return self._drain(node, False)


def demo_dashboard(st: State) -> tuple[Any, dict[str, Any], str]:
    """Serve the dashboard for the demo's store with a one-time admin login (the first login
    with it consumes it; `agentctl users add demo` sets a lasting one). Checks that logging in
    works and the fleet page lists the nodes, as a throwaway user removed afterwards, so the
    check does not use up the login it hands out. Returns (server, data, password)."""
    import httpx

    from agentctl.dashboard.readmodel import ReadModel
    from agentctl.dashboard.web.app import create_app
    from agentctl.dashboard.web.auth import hash_password, one_time_hash
    from agentctl.dashboard.web.server import BackgroundServer

    password = secrets.token_urlsafe(12)
    store = st.store()
    store.put_user("demo", one_time_hash(password), "admin")
    checker, check_pw = "demo-check-" + secrets.token_hex(4), secrets.token_urlsafe(12)
    store.put_user(checker, hash_password(check_pw), "viewer")
    app = create_app(ReadModel(store), actions=_actions(st),
                     session_secret=secrets.token_bytes(32))  # fmt: skip
    server = BackgroundServer(app)
    try:
        url = server.start()
        with httpx.Client(base_url=url, timeout=30, follow_redirects=True) as client:
            login = client.get("/login")
            token = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
            form = {"username": checker, "password": check_pw,
                    "csrf_token": token.group(1) if token else ""}  # fmt: skip
            page = client.post("/login", data=form)
            nodes = [n.name for n in store.list_nodes()]
            ok = page.status_code == 200 and all(f'data-node="{n}"' in page.text for n in nodes)
    finally:
        store.remove_user(checker)
    return server, {"url": url, "user": "demo", "checked": ok}, password


def _actions(st: State) -> FleetActions | None:
    """Actions need an inventory; without one the dashboards are read-only."""
    try:
        st.inventory()
    except UsageError:
        return None
    return FleetActions(st)


def session_secret(st: State) -> bytes:
    """The cookie-signing key: made once, kept 0600 in the data dir, so sessions survive a
    restart and stay valid only for this installation."""
    path = st.settings().data_dir / SECRET_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex())
    return key


def _password(password_env: str | None, st: State) -> str:
    if password_env:
        value = os.environ.get(password_env)
        if not value:
            raise ConfigError(f"--password-env names ${password_env}, which is unset or empty")
        return value
    if not st.output.interactive:
        raise UsageError("no terminal to ask for the password: use --password-env VAR")
    first = typer.prompt("password", hide_input=True)
    if typer.prompt("again", hide_input=True) != first:
        raise UsageError("the passwords differ")
    return str(first)


@users_app.command("add")
def users_add(
    username: Annotated[str, typer.Argument()],
    role: Annotated[
        str, typer.Option("--role", help=f"One of {', '.join(USER_ROLES)}.")
    ] = "viewer",
    password_env: Annotated[
        str | None,
        typer.Option("--password-env", help="Read the password from this variable (no prompt)."),
    ] = None,
) -> None:
    """Add a user, or set an existing user's password and role."""
    from agentctl.collectors.store import ROLES
    from agentctl.dashboard.web.auth import hash_password

    st = state()
    if role not in ROLES:
        raise UsageError(f"--role: one of {', '.join(ROLES)}")
    password = _password(password_env, st)
    if len(password) < 8:
        raise UsageError("a password has at least 8 characters")
    user, created = st.store().put_user(username, hash_password(password), role)
    st.output.emit({"username": user.username, "role": user.role, "created": created},
                   schema="agentctl.users.add/1", ok=True)  # fmt: skip
    st.output.info(f"{'added' if created else 'updated'} {user.username} ({user.role})")


@users_app.command("remove")
def users_remove(username: Annotated[str, typer.Argument()]) -> None:
    """Remove a user and its API tokens."""
    st = state()
    if not st.store().remove_user(username):
        raise UsageError(f"no user {username!r}")
    st.output.emit({"username": username, "removed": True}, schema="agentctl.users.remove/1",
                   ok=True)  # fmt: skip
    st.output.info(f"removed {username}")


@users_app.command("list")
def users_list() -> None:
    """Users and roles (never their password hashes)."""
    st = state()
    users = st.store().list_users()
    rows: list[dict[str, Any]] = [
        {"username": u.username, "role": u.role, "created_at": u.created_at.isoformat(),
         "last_login_at": u.last_login_at.isoformat() if u.last_login_at else None,
         "disabled": u.disabled} for u in users
    ]  # fmt: skip
    st.output.emit({"users": rows}, schema="agentctl.users.list/1", ok=True)
    table = Table(title="Dashboard users", title_justify="left")
    for col in ("user", "role", "created", "last login"):
        table.add_column(col)
    for r in rows:
        table.add_row(plain(r["username"]), plain(r["role"]), plain(r["created_at"][:19]),
                      plain((r["last_login_at"] or "-")[:19]))  # fmt: skip
    st.output.print(table)


@users_app.command("token")
def users_token(
    username: Annotated[str, typer.Argument()],
    name: Annotated[str, typer.Option("--name", help="What the token is for.")] = "watch",
) -> None:
    """Make an API token for USER (`agentctl watch --remote`); shown once, stored hashed."""
    st = state()
    token = secrets.token_urlsafe(32)
    try:
        st.store().add_token(username, name, token)
    except ValueError as e:
        raise UsageError(str(e)) from None
    st.output.emit({"username": username, "name": name, "token": token},
                   schema="agentctl.users.token/1", ok=True)  # fmt: skip
    st.output.info(f"token for {username} ({name}), shown once:\n{token}")


@dashboard_app.command("serve")
def dashboard_serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8080,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="PEM certificate.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="PEM private key.")] = None,
    bundle_dir: Annotated[
        Path | None, typer.Option("--bundle-dir", help="Where L2 bundles are kept (downloads).")
    ] = None,
) -> None:
    """Serve the web dashboard (login required; 127.0.0.1 unless told otherwise)."""
    import uvicorn

    from agentctl.dashboard.readmodel import ReadModel
    from agentctl.dashboard.web.app import create_app

    st = state()
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    if not st.store().list_users():
        st.output.warn("no dashboard user yet: agentctl users add NAME --role admin")
    actions = _actions(st)
    app = create_app(ReadModel(st.store()), actions=actions, session_secret=session_secret(st),
                     secure_cookies=tls_cert is not None, bundle_dir=bundle_dir)  # fmt: skip
    scheme = "https" if tls_cert else "http"
    st.output.info(f"dashboard on {scheme}://{host}:{port}/ (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning",
                ssl_certfile=str(tls_cert) if tls_cert else None,
                ssl_keyfile=str(tls_key) if tls_key else None)  # fmt: skip


def watch(
    remote: Annotated[
        str | None, typer.Option("--remote", help="A dashboard's URL instead of the local store.")
    ] = None,
    token_env: Annotated[
        str, typer.Option("--token-env", help="Variable holding the API token (with --remote).")
    ] = "AGENTCTL_TOKEN",  # noqa: S107 - the variable's name, not a token
    refresh: Annotated[float, typer.Option("--refresh", min=0.5, help="Seconds.")] = 5.0,
) -> None:
    """The terminal dashboard: fleet, nodes, serving; `?` for keys."""
    from agentctl.dashboard.readmodel import ReadModel
    from agentctl.dashboard.tui.app import WatchApp
    from agentctl.dashboard.tui.source import LocalSource, RemoteSource

    st = state()
    if remote:
        token = os.environ.get(token_env)
        if not token:
            raise ConfigError(f"--remote needs an API token in ${token_env} (agentctl users token)")
        source = RemoteSource(remote, token)
        try:
            role = source.role()  # the server enforces it too; this only shapes the keys
            WatchApp(source, actions=source.actions(), role=role, refresh_s=refresh).run()
        finally:
            source.close()
        return
    else:
        actions = _actions(st)
        app = WatchApp(LocalSource(ReadModel(st.store())), actions=actions, role="operator",
                       refresh_s=refresh)  # fmt: skip
    app.run()
