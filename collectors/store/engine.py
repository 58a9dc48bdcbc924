"""Engine construction, SQLite connection discipline and programmatic Alembic migrations.

SQLite is the default backend and needs care to be safe with several threads (the fan-out)
and several processes (CLI next to the dashboard): WAL so readers never block the writer, a
busy timeout so writers queue instead of failing, enforced foreign keys, and write
transactions that take the write lock up front (`BEGIN IMMEDIATE`), because a deferred
transaction that reads and then writes can fail with SQLITE_BUSY without ever waiting.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.pool import StaticPool

from .models import Base

if TYPE_CHECKING:
    from alembic.config import Config

#: The newest migration shipped (tests check it against Alembic's own head). Opening a store
#: that is already there skips importing Alembic, which is a quarter of CLI start-up time.
HEAD_REVISION: Final = "0005"

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"
DEFAULT_DB_NAME: Final = "agentctl.db"

#: run on every new SQLite connection (see module docstring for why each matters)
SQLITE_PRAGMAS: Final = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA busy_timeout=5000",
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=NORMAL",
)

#: execution option read by the BEGIN hook: "IMMEDIATE" for writers, absent for readers
BEGIN_MODE_OPTION: Final = "agentctl_sqlite_begin"
#: execution option: turn foreign keys off for this connection (table-copy migrations)
MIGRATING_OPTION: Final = "agentctl_sqlite_migrating"
#: PostgreSQL advisory lock (per database) held while migrating; any fixed number would do
PG_MIGRATION_LOCK: Final = 0x61676E74_6D696772  # "agntmigr"


def default_sqlite_url(data_dir: Path) -> str:
    """URL of the default store file inside `data_dir` (absolute, so cwd never matters)."""
    path = (data_dir.expanduser().absolute() / DEFAULT_DB_NAME).as_posix()
    return URL.create("sqlite", database=path).render_as_string(hide_password=False)


def display_url(url: str | URL) -> str:
    """The URL as safe to show: password masked; unparseable input is not echoed."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def sqlite_file(url: URL) -> Path | None:
    """The file behind a SQLite URL, or None for other backends and in-memory databases."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or url.query.get("mode") == "memory":
        return None
    if database.startswith("file:"):
        return None  # URI filenames: SQLite parses these itself
    return Path(database)


def is_sqlite_memory(url: URL) -> bool:
    """A private in-memory SQLite database (gone when its only connection closes)."""
    return url.get_backend_name() == "sqlite" and (url.database or "") in ("", ":memory:")


def ensure_sqlite_dir(url: URL) -> None:
    """Create the directory of a SQLite file (SQLite creates the file, not its parents)."""
    path = sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


def create_store_engine(url: str | URL) -> Engine:
    """An engine with the store's connection discipline.

    `hide_parameters` keeps row values (command output may hold anything) out of error text.
    """
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"hide_parameters": True}
    if is_sqlite_memory(parsed):
        # one shared connection, or every pool checkout would see its own empty database
        kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    engine = create_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        _install_sqlite_hooks(engine)
    return engine


def _install_sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the sqlite3 module (it would defer it past our reads and
        # never issue IMMEDIATE); SQLAlchemy emits it in _on_begin instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in SQLITE_PRAGMAS:
                cursor.execute(pragma)
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get(MIGRATING_OPTION):
            # A table copy drops the old table; with foreign keys on, that would cascade-delete
            # the children. Must be set outside a transaction, hence here, before BEGIN.
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        mode = options.get(BEGIN_MODE_OPTION)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if mode == "IMMEDIATE" else "BEGIN")


def alembic_config(connection: Connection | None = None) -> Config:
    """An in-memory Alembic config pointing at the migrations shipped in this package."""
    from alembic.config import Config

    cfg = Config()
    # configparser interpolation: a literal % in the install path must be doubled
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.attributes["connection"] = connection
    cfg.attributes["target_metadata"] = Base.metadata
    return cfg


def head_revision() -> str | None:
    """The newest revision this code knows."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


class ForeignKeyViolation(RuntimeError):
    """A migration left rows pointing at nothing; it is rolled back."""


class MigrationError(RuntimeError):
    """Alembic refused (unknown revision, e.g. a database from a newer agentctl)."""


def upgrade_to_head(engine: Engine) -> None:
    """Migrate to head in one transaction; a no-op when already there.

    On SQLite the transaction holds the write lock from the start, and on PostgreSQL an
    advisory lock, so two processes opening a new store at once migrate one after the other,
    and the second finds nothing to do (without the lock, both create the tables and one fails).
    """
    if _already_at_head(engine):
        return
    from alembic import command
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    is_sqlite = engine.dialect.name == "sqlite"
    options = {BEGIN_MODE_OPTION: "IMMEDIATE", MIGRATING_OPTION: True} if is_sqlite else {}
    with engine.connect() as conn:
        conn = conn.execution_options(**options)
        try:
            with conn.begin():
                if engine.dialect.name == "postgresql":
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_MIGRATION_LOCK})")
                try:
                    command.upgrade(alembic_config(conn), "head")
                except (CommandError, RevisionError) as exc:
                    raise MigrationError(str(exc)) from exc
                if is_sqlite:
                    bad = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if bad:
                        raise ForeignKeyViolation(
                            f"migration left {len(bad)} rows with dangling foreign keys"
                        )
        finally:
            if is_sqlite:
                _restore_foreign_keys(conn)


def _already_at_head(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).fetchall()
    except Exception:  # no table yet, or unreadable: let the full path report it
        return False
    return [r[0] for r in rows] == [HEAD_REVISION]


def _restore_foreign_keys(conn: Connection) -> None:
    """Foreign keys were off for the migration; never hand such a connection back as is."""
    try:
        # straight to the driver: through SQLAlchemy it would open a transaction, where
        # SQLite ignores this pragma
        conn.connection.driver_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]
    except Exception:
        conn.invalidate()
