"""The store on a real PostgreSQL server, by URL: one throwaway cluster per session (see
`pg_server.py`), a fresh database per test.

The API tests of `test_store_api.py` are imported below and so collected again here, where their
`url` and `store` fixtures are this module's PostgreSQL ones. The tests written out here cover
what differs from SQLite: migrations and schema on a real server, concurrent writers without
the SQLite write lock, text PostgreSQL refuses, timestamptz, and authentication failures.

Skipped when no PostgreSQL server binaries are installed; `tests/setup-and-run.sh` installs them.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone

import children
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pg_server import SERVER_TIMEZONE, SUPERUSER, PgServer, why_unavailable
from sqlalchemy import create_engine, inspect
from test_store_api import (  # noqa: F401  (the test_* names are collected again here)
    assert_utc,
    gpu_facts,
    test_datetimes_come_back_aware_utc,
    test_gpu_entries_with_missing_keys_are_tolerated,
    test_hosts_with_status,
    test_invalid_statuses_and_unknown_runs,
    test_list_nodes_summarises_latest_snapshot,
    test_list_runs_newest_first_and_last_run_id,
    test_naive_datetime_is_refused,
    test_output_is_bounded_keeping_head_and_tail,
    test_record_facts_replaces_gpu_rows,
    test_run_lifecycle_with_concurrent_results,
    test_secret_options_are_not_stored,
    test_snapshot_without_gpus_family_keeps_gpu_rows,
    test_two_store_handles_write_concurrently,
    test_unknown_node_is_created_by_facts,
    test_upsert_nodes_is_idempotent_and_updates,
)
from test_store_schema import TABLES

from agentctl.collectors.store import HostResult, NodeRecord, Store
from agentctl.collectors.store.engine import HEAD_REVISION, alembic_config, head_revision
from agentctl.collectors.store.models import Base
from agentctl.ctl.errors import StoreError

_unavailable = why_unavailable()
if _unavailable is not None:
    pytest.skip(_unavailable, allow_module_level=True)
pytest.importorskip("psycopg", reason="psycopg not installed (pip install -e '.[dev]')")

_db_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    server = PgServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def db_name(pg: PgServer) -> Iterator[str]:
    """A fresh, empty database, dropped afterwards (connections left open included)."""
    name = f"agentctl_test_{next(_db_numbers)}"
    pg.create_database(name)
    yield name
    pg.drop_database(name)


@pytest.fixture
def url(pg: PgServer, db_name: str) -> str:
    return pg.url(db_name)


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    s = Store.open(url)
    yield s
    s.close()


# -- schema and migrations -------------------------------------------------------------------


def test_open_migrates_to_head_and_reopens(url: str) -> None:
    with Store.open(url) as store:
        assert store.schema_revision() == head_revision() == HEAD_REVISION
        store.upsert_nodes([NodeRecord("gpu-01", "10.0.0.1", 22)])
        run_id = store.start_run("run", command="true", selection="all", hosts=["a"], options={})
    engine = create_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()
    with Store.open(url) as store:  # already at head: nothing to migrate, nothing lost
        assert store.schema_revision() == HEAD_REVISION
        assert [n.name for n in store.list_nodes()] == ["gpu-01"]
        assert store.last_run_id() == run_id


def test_models_and_migrations_agree(url: str) -> None:
    Store.open(url).close()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, Base.metadata) == []
    finally:
        engine.dispose()


def test_downgrade_to_base_and_back(url: str) -> None:
    Store.open(url).close()
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "base")
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    finally:
        engine.dispose()
    with Store.open(url) as store:
        assert store.schema_revision() == HEAD_REVISION


#: opens the store named by $AGENTCTL_TEST_URL at the wall-clock time in argv[1]
_OPEN_AT = """
import os, sys, time
import alembic.command  # imported up front, so both processes reach the database together
from agentctl.collectors.store import Store
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
with Store.open(os.environ["AGENTCTL_TEST_URL"]) as store:
    print(store.schema_revision())
"""


def test_two_processes_open_a_new_database_at_once(url: str) -> None:
    """Both find the database unmigrated and race to migrate it: neither may fail.

    Processes, not threads: Alembic's `context` is process-global, so two migrations in one
    process can never run at once anyway.
    """
    at = str(time.time() + 1.5)
    env = dict(os.environ, AGENTCTL_TEST_URL=url)
    procs = [
        children.start(
            [sys.executable, "-c", _OPEN_AT, at],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        outcomes = [p.communicate(timeout=60) for p in procs]
    finally:  # one timed out: the other is stopped too
        for p in procs:
            children.stop(p)
    for proc, (out, err) in zip(procs, outcomes, strict=True):
        assert proc.returncode == 0, err
        assert out.strip() == HEAD_REVISION


# -- concurrency without the SQLite write lock -----------------------------------------------


def test_concurrent_results_for_the_same_hosts(store: Store) -> None:
    """8 threads race to insert each (run, host) row first: the losers update it instead.

    Only the database's unique constraint arbitrates here (the store's write lock is SQLite's).
    """
    hosts = [f"gpu-{i:02d}" for i in range(12)]
    run_id = store.start_run("run", command="x", selection=None, hosts=hosts, options={})
    start = threading.Barrier(8)

    def work(worker: int) -> None:
        for host in hosts:
            start.wait()  # all 8 on the same new host at once
            store.record_result(
                run_id, HostResult(host, "ok", 0, f"{worker}", "", 0.1, attempts=worker + 1)
            )

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(work, range(8)))
    run = store.get_run(run_id)
    assert run is not None
    assert [r.host for r in run.results] == hosts
    for r in run.results:  # one row per host, whole: every field from the same writer
        assert r.stdout == str(r.attempts - 1)


# -- text PostgreSQL refuses -----------------------------------------------------------------


def test_nul_and_lone_surrogate_in_output_are_stored(store: Store) -> None:
    run_id = store.start_run("run", command="x", selection=None, hosts=["a"], options={})
    store.record_result(
        run_id,
        HostResult("a", "failed", 1, "a\x00b\n", "bad \udcff byte", 0.1, "exec", "nul \x00 here"),
    )
    run = store.get_run(run_id)
    assert run is not None
    (res,) = run.results
    assert res.stdout == "a\ufffdb\n"
    assert res.stderr == "bad ? byte"
    assert res.error_message == "nul \ufffd here"


def test_nul_and_lone_surrogate_in_facts_keep_nodes_listable(store: Store) -> None:
    """Fact values come from remote output; one odd byte must not break `agentctl nodes`."""
    facts = gpu_facts(2, name="NVIDIA\x00H100")
    facts["os"] = {"pretty_name": "Ubuntu\x00 24.04"}
    facts["dmi"] = {"product\x00name": "bad \udcff byte"}
    store.record_facts("gpu-01", facts, {"disks": "smartctl: \x00"})
    (view,) = store.list_nodes()
    assert view.os == "Ubuntu\ufffd 24.04"
    assert view.gpu_count == 2 and view.gpu_names == ("NVIDIA\ufffdH100",) * 2
    snap = store.latest_facts("gpu-01")
    assert snap is not None
    assert snap.facts["dmi"] == {"product\ufffdname": "bad ? byte"}
    assert snap.problems == {"disks": "smartctl: \ufffd"}


# -- time ------------------------------------------------------------------------------------


def test_timestamps_are_timestamptz_at_the_right_instant(
    store: Store, pg: PgServer, db_name: str
) -> None:
    """The server runs in a non-UTC zone: values must still mean the same instant."""
    when = datetime(2026, 6, 1, 14, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    store.record_facts("n", {}, {}, collected_at=when)
    snap = store.latest_facts("n")
    assert snap is not None and snap.collected_at == when
    assert_utc(snap.collected_at)
    with pg.connect(db_name) as conn:
        assert conn.execute("SHOW timezone").fetchone() == (SERVER_TIMEZONE,)
        raw = conn.execute("SELECT collected_at FROM fact_snapshots").fetchone()
    assert raw is not None and raw[0] == when == datetime(2026, 6, 1, 12, 30, 15, 123456, UTC)
    assert raw[0].utcoffset() == timedelta(hours=5, minutes=30)  # the server's zone, same instant


# -- failures --------------------------------------------------------------------------------


def test_wrong_password_raises_store_error_without_the_password(pg: PgServer, db_name: str) -> None:
    wrong = "Wr0ng-hunter2-secret"
    with pytest.raises(StoreError) as info:
        Store.open(pg.url(db_name, password=wrong))
    err = info.value
    assert "password authentication failed" in err.message
    assert f"{SUPERUSER}:***@127.0.0.1:{pg.port}/{db_name}" in err.message
    # nowhere: not in the message, the hint, nor anything chained to it
    chain: list[BaseException] = []
    exc: BaseException | None = err
    while exc is not None and len(chain) < 10:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for e in chain:
        assert wrong not in str(e) and wrong not in repr(e)
    assert wrong not in (err.hint or "")


def test_missing_database_raises_store_error(pg: PgServer) -> None:
    with pytest.raises(StoreError) as info:
        Store.open(pg.url("no_such_database"))
    assert 'database "no_such_database" does not exist' in info.value.message
    assert pg.password not in str(info.value)
