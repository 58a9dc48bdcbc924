"""A throwaway PostgreSQL cluster for tests: `initdb` into a temporary directory, `pg_ctl start`
on 127.0.0.1 and a free port, `pg_ctl stop -m immediate` at the end.

Uses the server binaries of Debian's `postgresql` package (`/usr/lib/postgresql/*/bin`), or an
`initdb` on PATH elsewhere. PostgreSQL refuses to run as root, so under euid 0 every server
binary runs as the `postgres` system user (`runuser -u postgres --`), which the Debian package
creates, and the cluster directory is handed to that user. Durability is switched off (`-F`,
`fsync=off`): the cluster lives only as long as the test session.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

SUPERUSER = "agentctl"
#: not UTC and not a whole hour, so a datetime that skips its conversion shows up
SERVER_TIMEZONE = "Asia/Kolkata"
_START_TRIES = 3


def find_bindir() -> Path | None:
    """The newest `/usr/lib/postgresql/<version>/bin` holding initdb, else initdb's dir on PATH."""

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", Path(path).parent.parent.name))

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def why_unavailable() -> str | None:
    """Why no cluster can be started here, or None when one can."""
    if find_bindir() is None:
        return (
            "PostgreSQL server binaries not installed "
            "(apt-get install postgresql; tests/setup-and-run.sh does this)"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root needs the 'postgres' system user to run the server"
        if shutil.which("runuser") is None:
            return "running as root needs runuser (util-linux) to drop to the 'postgres' user"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgServer:
    """One cluster; `start()` then `url(db)`, `create_database(db)`, ..., `stop()`."""

    def __init__(self) -> None:
        bindir = find_bindir()
        if bindir is None:
            raise RuntimeError(why_unavailable() or "no PostgreSQL binaries")
        self.bindir = bindir
        self.password = secrets.token_hex(16)
        self.port = 0
        # not under pytest's tmp dirs: those are private to the invoking user (root), and the
        # server user must be able to reach its data directory
        self.root = Path(tempfile.mkdtemp(prefix="agentctl-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_postgres = os.geteuid() == 0
        self._admin: Any = None

    # -- running the server binaries ---------------------------------------------------------

    def _run(self, tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bindir / tool), *args]
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        # cwd: the server user may not be allowed into the caller's working directory
        return subprocess.run(
            argv, cwd=self.root, capture_output=True, text=True, timeout=timeout, check=False
        )

    def _check(self, tool: str, *args: str) -> None:
        res = self._run(tool, *args)
        if res.returncode != 0:
            raise RuntimeError(
                f"{tool} failed ({res.returncode}):\n{res.stdout}{res.stderr}{self._log_tail()}"
            )

    def _log_tail(self) -> str:
        try:
            return "\n--- server log ---\n" + self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            for path in (self.root, pwfile):
                os.chown(path, user.pw_uid, user.pw_gid)
        self._check(
            "initdb",
            "--pgdata",
            str(self.data),
            "--username",
            SUPERUSER,
            "--pwfile",
            str(pwfile),
            # TCP needs the password (so a wrong one is refused for real); the socket is ours
            "--auth-host",
            "scram-sha-256",
            "--auth-local",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
        )
        pwfile.unlink()
        for attempt in range(1, _START_TRIES + 1):
            # a free port can be taken between probing and binding: try another one
            self.port = _free_port()
            options = " ".join(
                [
                    "-F",
                    "-c fsync=off",
                    "-c full_page_writes=off",
                    "-c synchronous_commit=off",
                    "-c listen_addresses=127.0.0.1",
                    f"-c port={self.port}",
                    f"-c unix_socket_directories={self.root}",
                    f"-c timezone={SERVER_TIMEZONE}",
                ]
            )
            res = self._run(
                "pg_ctl", "start", "-w", "-t", "30", "-D", str(self.data), "-l", str(self.log),
                "-o", options,
            )  # fmt: skip
            if res.returncode == 0:
                return
            if attempt == _START_TRIES:
                raise RuntimeError(
                    f"pg_ctl start failed ({res.returncode}):\n"
                    f"{res.stdout}{res.stderr}{self._log_tail()}"
                )

    def stop(self) -> None:
        """Stop the server (no checkpoint: nothing here is worth keeping) and delete it all."""
        try:
            if self._admin is not None:
                with contextlib.suppress(Exception):
                    self._admin.close()
                self._admin = None
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "stop", "-m", "immediate", "-w", "-D", str(self.data))
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- databases ---------------------------------------------------------------------------

    def url(self, database: str, *, password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql+psycopg://{SUPERUSER}:{secret}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str, *, autocommit: bool = False) -> Any:
        """A plain psycopg connection, past the store (to look at what it wrote)."""
        import psycopg

        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=SUPERUSER,
            password=self.password,
            dbname=database,
            autocommit=autocommit,
        )

    def admin(self) -> Any:
        """An autocommit connection to the `postgres` database (CREATE DATABASE...)."""
        if self._admin is None:
            self._admin = self.connect("postgres", autocommit=True)
        return self._admin

    def create_database(self, name: str) -> None:
        from psycopg import sql

        self.admin().execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop_database(self, name: str) -> None:
        """Drop `name`, disconnecting whatever still holds a connection to it."""
        from psycopg import sql

        self.admin().execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
