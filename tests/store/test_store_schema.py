"""Opening, migrating and failing: against real SQLite files, no mocks."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from agentctl.collectors.store import NodeRecord, Store, default_sqlite_url
from agentctl.collectors.store.engine import HEAD_REVISION, alembic_config, head_revision
from agentctl.collectors.store.models import Base
from agentctl.ctl.errors import StoreError

TABLES = {"nodes", "gpus", "fact_snapshots", "runs", "run_results", "alembic_version"}


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "agentctl.db"


def test_open_creates_directory_and_migrates_to_head(db_path: Path) -> None:
    with Store.open(_url(db_path)) as store:
        assert db_path.is_file()
        assert store.schema_revision() == head_revision() == HEAD_REVISION
    tables = set(inspect(create_engine(_url(db_path))).get_table_names())
    assert tables >= TABLES


def test_default_sqlite_url_is_absolute_and_opens(tmp_path: Path) -> None:
    url = default_sqlite_url(tmp_path / "state")
    assert url == f"sqlite:///{tmp_path / 'state' / 'agentctl.db'}"
    with Store.open(url) as store:
        assert store.schema_revision() == HEAD_REVISION
    assert (tmp_path / "state" / "agentctl.db").is_file()


def test_wal_mode_is_on(db_path: Path) -> None:
    Store.open(_url(db_path)).close()
    # journal_mode=WAL is persistent, so an unrelated client sees it too
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_every_pooled_connection_has_the_pragmas(db_path: Path) -> None:
    store = Store.open(_url(db_path))
    try:
        # white-box: the migration ran with foreign keys off; that must not leak into the pool
        engine = store._engine
        conns = [engine.connect() for _ in range(3)]
        try:
            for conn in conns:
                pragma = conn.exec_driver_sql
                assert pragma("PRAGMA journal_mode").scalar() == "wal"
                assert pragma("PRAGMA foreign_keys").scalar() == 1
                assert pragma("PRAGMA busy_timeout").scalar() == 5000
                assert pragma("PRAGMA synchronous").scalar() == 1  # NORMAL
        finally:
            for conn in conns:
                conn.close()
    finally:
        store.close()


def test_reopen_existing_database_is_a_noop_migration(db_path: Path) -> None:
    with Store.open(_url(db_path)) as store:
        store.upsert_nodes([NodeRecord("gpu-01", "10.0.0.1", 22)])
        run_id = store.start_run("run", command="true", selection="all", hosts=["a"], options={})
    with Store.open(_url(db_path)) as store:
        assert store.schema_revision() == HEAD_REVISION
        assert [n.name for n in store.list_nodes()] == ["gpu-01"]
        assert store.last_run_id() == run_id


def test_models_and_migrations_agree(db_path: Path) -> None:
    Store.open(_url(db_path)).close()
    engine = create_engine(_url(db_path))
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, Base.metadata) == []
    engine.dispose()


def test_downgrade_to_base_and_back(db_path: Path) -> None:
    Store.open(_url(db_path)).close()
    engine = create_engine(_url(db_path))
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    engine.dispose()
    with Store.open(_url(db_path)) as store:
        assert store.schema_revision() == HEAD_REVISION


def test_parent_is_a_file_raises_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    url = _url(blocker / "sub" / "agentctl.db")
    with pytest.raises(StoreError) as info:
        Store.open(url)
    assert url in info.value.message


def test_database_path_is_a_directory_raises_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unable to open database file"):
        Store.open(_url(tmp_path))


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_directory_raises_store_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(StoreError) as info:
            Store.open(_url(locked / "agentctl.db"))
        assert str(locked) in info.value.message
    finally:
        locked.chmod(0o700)


def test_garbage_file_raises_store_error(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(os.urandom(16384))
    with pytest.raises(StoreError) as info:
        Store.open(_url(db_path))
    assert str(db_path) in info.value.message
    assert "not a database" in info.value.message
    assert info.value.hint


def test_database_from_a_newer_agentctl_raises_store_error(db_path: Path) -> None:
    Store.open(_url(db_path)).close()
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(StoreError, match="9999") as info:
        Store.open(_url(db_path))
    assert info.value.hint is not None and "newer" in info.value.hint


def test_password_never_appears_in_errors() -> None:
    # nothing listens on port 1; without a driver installed this fails even earlier
    url = "postgresql://fleet:hunter2@127.0.0.1:1/agentctl"
    with pytest.raises(StoreError) as info:
        Store.open(url)
    err = info.value
    assert "hunter2" not in str(err) and "hunter2" not in (err.hint or "")
    assert "fleet:***@127.0.0.1:1/agentctl" in err.message


def test_unparseable_url_raises_store_error_without_echoing_it() -> None:
    with pytest.raises(StoreError) as info:
        Store.open("definitely not a url hunter2")
    assert "hunter2" not in str(info.value)
    # the parser's own message echoes the URL: it must not ride along in the traceback
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_closed_store_raises_store_error(db_path: Path) -> None:
    store = Store.open(_url(db_path))
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.list_nodes()


def test_output_cap_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Store.open("sqlite://", output_cap=0)


def test_in_memory_database_works() -> None:
    with Store.open("sqlite://") as store:
        assert store.schema_revision() == HEAD_REVISION
        store.upsert_nodes([NodeRecord("a", "a", None)])
        assert [n.name for n in store.list_nodes()] == ["a"]


def test_fast_path_head_constant_matches_alembic() -> None:
    from agentctl.collectors.store.engine import HEAD_REVISION

    assert head_revision() == HEAD_REVISION
