"""`agentctl export` formats on a real SQLite store: each format against its documented required
fields (JSON Schemas in tests/fixtures/export), no planted secret in any export, truncation
markers, the frame (header, trailer, sha256) and cut-off files."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agentctl.collectors.store import EventRecord, HostResult, NodeRecord, Store
from agentctl.ctl.errors import UsageError
from agentctl.ctl.export import FORMATS, KINDS, Limits, export, verify_file
from agentctl.ctl.export.bounds import MARKER, bound, cut_text, json_line

FIXTURES = Path(__file__).parent / "fixtures" / "export"
T0 = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
CREATED = datetime(2026, 11, 21, 0, 0, tzinfo=UTC)

HF = "hf_" + "Qz7kLmN2pR4sT6vW8xY0aB1cD3eF5gH7jK"
PASSWORD = "Tr0ub4dor&3-horse"  # a planted test secret
PEM_BODY = "MIIEowIBAAKCAQEA7Zq3" + "x9Kj" * 40
PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----"
SECRETS = (HF, PASSWORD, PEM_BODY[:24], "BEGIN RSA PRIVATE KEY")

GPU_NAME = "NVIDIA H100 80GB HBM3"


def _gpu(i: int, serial: str | None) -> dict[str, Any]:
    return {
        "index": i,
        "uuid": f"GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd",
        "name": GPU_NAME,
        "pci_bus_id": f"00000000:{6 + i:02X}:00.0",
        "driver_version": "550.54.15",
        "memory_total_mib": 81559,
        "serial": serial,
        "vbios_version": "96.00.99.00.01",
    }


def _facts(hostname: str, gpus: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "os": {
            "id": "ubuntu",
            "name": "Ubuntu",
            "version_id": "22.04",
            "pretty_name": "Ubuntu 22.04.4 LTS",
            "hostname": hostname,
            "architecture": "x86_64",
        },
        "kernel": {"release": "5.15.0-105-generic"},
        "cpu": {"model_name": "AMD EPYC 9454", "sockets": 2, "cores": 96, "threads": 192},
        "memory": {"total_bytes": 2 * 2**40},
        "nvidia": {"driver_version": "550.54.15", "cuda_version": "12.4"},
        "nics": {
            "interfaces": [
                {"name": "lo", "mac": "00:00:00:00:00:00", "addresses": []},
                {
                    "name": "eth0",
                    "mac": "aa:bb:cc:00:11:22",
                    "addresses": [{"family": "inet", "address": "10.1.0.5", "scope": "global"}],
                },
            ]
        },
        "gpus": {"present": True, "count": len(gpus), "gpus": gpus},
    }


def _fill(store: Store, *, huge: str | None = None, gpus: int = 2) -> None:
    store.upsert_nodes(
        [
            NodeRecord("gpu-01", "10.1.0.5", 22, ("h100",), ("worker",), gpus),
            NodeRecord("cpu-01", "cpu-01.example", None, (), (), 0),
        ]
    )
    devices = [_gpu(i, f"165492200653{i}" if i != 1 else None) for i in range(gpus)]
    store.record_facts("gpu-01", _facts("gpu-01.dc1.example", devices), {}, collected_at=T0)
    xid_msg = (
        f"NVRM: Xid (PCI:0000:06:00): 79, pid=1234, GPU has fallen off the bus. env HF_TOKEN={HF}"
    )
    store.record_events(
        [
            EventRecord(
                "gpu-01",
                "xid",
                "xid:0000:06:00:79",
                T0,
                "critical",
                huge or xid_msg,
                79,
                "00000000:06:00.0",
                {"meaning": "GPU has fallen off the bus", "action": "drain and reboot"},
            ),
            EventRecord(
                "gpu-01",
                "check",
                "check:disk_space",
                T0 + timedelta(minutes=1),
                "critical",
                f"/var full; db url postgres://svc:{PASSWORD}@db/x",
                None,
                "disk_space",
                {"verdict": "fail", "category": "system"},
            ),
        ]
    )
    store.save_diag(
        "gpu-01",
        "l1",
        verdict="fail",
        summary=f"1 fail (disk_space); leaked {HF}",
        data={
            "checks": [
                {
                    "name": "disk_space",
                    "category": "system",
                    "verdict": "fail",
                    "reason": f"password={PASSWORD} found in /etc/app.conf",
                },
                {"name": "gpu_count", "category": "gpu", "verdict": "pass", "reason": "ok"},
            ]
        },
        created_at=T0 + timedelta(minutes=2),
    )
    store.save_diag(
        "cpu-01",
        "l1",
        verdict="pass",
        summary="all good",
        data={},
        created_at=T0 + timedelta(minutes=3),
    )
    run = store.start_run(
        "run",
        command=f"curl -H 'Authorization: Bearer {HF}' x",
        selection="all",
        hosts=["gpu-01", "cpu-01"],
        options={},
    )
    store.record_result(
        run,
        HostResult(
            "gpu-01",
            "failed",
            1,
            huge or f"key:\n{PEM}\n",
            "boom",
            1.25,
            "command",
            f"exit 1 (password={PASSWORD})",
        ),
    )
    store.record_result(run, HostResult("cpu-01", "ok", 0, "fine", "", 0.5))
    store.finish_run(run, status="partial", recap={"ok": 1, "failed": 1})


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    with Store.open(f"sqlite:///{tmp_path / 'x.db'}") as st:
        _fill(st)
        yield st


def _export(store: Store, fmt: str, kind: str, **kw: Any) -> tuple[str, Any]:
    buf = io.StringIO()
    summary = export(store, fmt, kind, kw.pop("since", None), buf, created_at=CREATED, **kw)
    return buf.getvalue(), summary


def _records(text: str) -> list[dict[str, Any]]:
    lines = text.splitlines()
    assert "agentctl_export" in json.loads(lines[0])
    assert "agentctl_export_end" in json.loads(lines[-1])
    return [json.loads(line) for line in lines[1:-1]]


def _schema(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return doc


SUPPORTED = [(f, k) for f, spec in FORMATS.items() for k in KINDS if spec.supports(k)]


@pytest.mark.parametrize(("fmt", "kind"), SUPPORTED)
def test_every_record_carries_its_documented_required_fields(
    store: Store, fmt: str, kind: str
) -> None:
    text, summary = _export(store, fmt, kind)
    records = _records(text)
    assert summary.count == len(records) > 0
    for doc in records:
        if fmt == "ecs":
            jsonschema.validate(doc, _schema("ecs.schema.json"))
        elif fmt == "hec":
            jsonschema.validate(doc, _schema("hec.schema.json"))
            jsonschema.validate(doc["event"], _schema("ecs.schema.json"))
            assert doc["fields"]["agentctl_schema"] == "agentctl.export/1"
        elif fmt == "ocsf":
            jsonschema.validate(doc, _schema("ocsf-base.schema.json"))
            cls = _schema(
                "ocsf-5001.schema.json" if kind == "inventory" else "ocsf-2004.schema.json"
            )
            jsonschema.validate(doc, cls)
            assert doc["type_uid"] == doc["class_uid"] * 100 + doc["activity_id"]
            assert doc["unmapped"]["agentctl"]["schema"] == "agentctl.export/1"
        else:
            jsonschema.validate(doc, _schema("servicenow-ire.schema.json"))


@pytest.mark.parametrize(("fmt", "kind"), SUPPORTED)
def test_no_planted_secret_appears_in_any_export(store: Store, fmt: str, kind: str) -> None:
    text, summary = _export(store, fmt, kind)
    for secret in SECRETS:
        assert secret not in text, (fmt, kind, secret)
    if kind != "inventory":
        assert "[REDACTED:" in text
        assert sum(summary.redactions.values()) > 0


def test_hec_carries_the_ecs_record_unchanged(store: Store) -> None:
    for kind in KINDS:
        ecs_records = _records(_export(store, "ecs", kind)[0])
        hec_records = _records(_export(store, "hec", kind)[0])
        assert [h["event"] for h in hec_records] == ecs_records
        for h, e in zip(hec_records, ecs_records, strict=True):
            assert h["sourcetype"] == "agentctl:ecs"
            assert h["host"] == e["host"]["name"]
            stamp = datetime.fromisoformat(e["@timestamp"]).timestamp()
            assert h["time"] == pytest.approx(stamp)


def test_ecs_mapping_of_an_xid_a_failed_check_and_inventory(store: Store) -> None:
    xid, check = _records(_export(store, "ecs", "events")[0])
    assert xid["event"]["kind"] == "alert"
    assert xid["event"]["code"] == "79"
    assert xid["event"]["severity"] == 4
    assert xid["rule"]["name"] == "xid-79"
    assert xid["agentctl"]["gpu"]["pci_bus_id"] == "00000000:06:00.0"
    assert xid["agentctl"]["event"]["key"] == "xid:0000:06:00:79"  # not mistaken for .pgpass
    assert check["rule"]["name"] == "disk_space"
    inv = {r["host"]["name"]: r for r in _records(_export(store, "ecs", "inventory")[0])}
    gpu = inv["gpu-01"]
    assert gpu["event"]["kind"] == "asset"
    assert gpu["host"]["hostname"] == "gpu-01.dc1.example"
    assert gpu["host"]["mac"] == ["AA-BB-CC-00-11-22"]
    assert gpu["host"]["ip"] == ["10.1.0.5"]
    devices = gpu["agentctl"]["gpu"]["devices"]
    assert [d["uuid"] for d in devices] == [_gpu(i, None)["uuid"] for i in range(2)]
    assert devices[0]["serial"] == "1654922006530"
    assert "gpu" not in inv["cpu-01"]["agentctl"]  # never collected: unknown, not zero


def test_ocsf_inventory_and_findings_lifecycle(store: Store) -> None:
    inv = {r["device"]["name"]: r for r in _records(_export(store, "ocsf", "inventory")[0])}
    dev = inv["gpu-01"]["device"]
    assert (inv["gpu-01"]["class_uid"], inv["gpu-01"]["activity_id"]) == (5001, 2)
    assert dev["os"]["type_id"] == 200  # Linux
    assert dev["hw_info"]["ram_size"] == 2 * 2**20  # MB
    assert len(inv["gpu-01"]["unmapped"]["agentctl"]["gpus"]) == 2
    diags = {r["device"]["name"]: r for r in _records(_export(store, "ocsf", "diagnostics")[0])}
    assert (diags["gpu-01"]["activity_id"], diags["gpu-01"]["status_id"]) == (1, 1)
    assert (diags["cpu-01"]["activity_id"], diags["cpu-01"]["status_id"]) == (3, 4)
    assert diags["gpu-01"]["finding_info"]["uid"] == "diag/gpu-01/l1"
    xid = _records(_export(store, "ocsf", "events")[0])[0]
    assert xid["finding_info"]["analytic"]["name"] == "xid-79"
    assert xid["resources"][0]["uid"] == "00000000:06:00.0"


def test_servicenow_payload_matches_nvidia_discovery_so_records_reconcile(store: Store) -> None:
    by_node = {
        r["agentctl"]["node"]: r for r in _records(_export(store, "servicenow", "inventory")[0])
    }
    doc = by_node["gpu-01"]
    server, *gpus = doc["items"]
    assert server["className"] == "cmdb_ci_linux_server"
    assert server["values"]["name"] == "gpu-01"  # the short hostname, as Discovery names it
    assert server["values"]["fqdn"] == "gpu-01.dc1.example"
    assert server["values"]["ram"] == str(2 * 2**20)
    assert server["lookup"] == [
        {
            "className": "cmdb_ci_network_adapter",
            "values": {
                "name": "eth0",
                "mac_address": "aa:bb:cc:00:11:22",
                "ip_address": "10.1.0.5",
            },
        }
    ]
    # GPU 1 has no serial: identified by name alone it would merge with its siblings
    assert [g["values"] for g in gpus] == [
        {
            "name": GPU_NAME,
            "manufacturer": "NVIDIA",
            "model_id": GPU_NAME,
            "serial_number": "1654922006530",
        }
    ]
    assert doc["agentctl"]["gpus_not_sent"] == [
        {"index": 1, "uuid": _gpu(1, None)["uuid"], "reason": "no serial number"}
    ]
    assert doc["relations"] == [{"parent": 1, "child": 0, "type": "Used by::Uses"}]
    details = doc["agentctl"]["gpu_details"]
    assert {d["uuid"] for d in details} == {_gpu(i, None)["uuid"] for i in range(2)}
    assert details[0]["bus_id"] == "00000000:06:00.0"
    assert details[0]["cuda_version"] == "12.4"
    cpu_only = by_node["cpu-01"]
    assert [i["className"] for i in cpu_only["items"]] == ["cmdb_ci_linux_server"]
    assert cpu_only["relations"] == []


@pytest.mark.parametrize(
    ("fmt", "kind", "hint"),
    [("ocsf", "runs", "ecs"), ("servicenow", "events", "ecs"), ("syslog", "events", "one of")],
)
def test_a_format_that_cannot_express_a_kind_is_a_usage_error(
    store: Store, fmt: str, kind: str, hint: str
) -> None:
    buf = io.StringIO()
    with pytest.raises(UsageError) as err:
        export(store, fmt, kind, None, buf)
    assert hint in (err.value.hint or "")
    assert buf.getvalue() == ""  # nothing written


def test_since_filters_by_time(store: Store) -> None:
    since = T0 + timedelta(seconds=30)
    events = _records(_export(store, "ecs", "events", since=since)[0])
    assert [e["agentctl"]["event"]["kind"] for e in events] == ["check"]
    diags = _records(_export(store, "ecs", "diagnostics", since=T0 + timedelta(minutes=3))[0])
    assert [d["host"]["name"] for d in diags] == ["cpu-01"]
    header = json.loads(_export(store, "ecs", "events", since=since)[0].splitlines()[0])
    assert header["agentctl_export"]["since"] == "2026-11-20T03:00:30Z"


def test_identical_input_gives_byte_identical_output(store: Store) -> None:
    for fmt, kind in SUPPORTED:
        assert _export(store, fmt, kind)[0] == _export(store, fmt, kind)[0]


# -- bounds --------------------------------------------------------------------------------


def test_huge_output_is_cut_with_a_marker_and_the_record_says_so(tmp_path: Path) -> None:
    # the store keeps 64 KiB of a run's output (its own head/tail cut), the export 8 KiB a field
    huge = PEM + "\n" + "x" * 200_000 + f" password={PASSWORD} tail-end"
    with Store.open(f"sqlite:///{tmp_path / 'h.db'}") as st:
        _fill(st, huge=huge)
        text, summary = _export(st, "ecs", "runs")
        hec_text, _ = _export(st, "hec", "runs")
    for out in (text, hec_text):
        for secret in SECRETS:
            assert secret not in out
    run = next(r for r in _records(text) if r["host"]["name"] == "gpu-01")
    assert summary.truncated_records == 1
    assert json.loads(text.splitlines()[-1])["agentctl_export_end"]["truncated_records"] == 1
    stdout = run["agentctl"]["run"]["stdout"]
    assert "…[truncated " in stdout and stdout.endswith("tail-end")
    assert stdout.startswith("[REDACTED:private-key]")  # redacted before it was cut
    assert len(stdout.encode()) <= 8192
    assert run["labels"]["agentctl_truncated"] == "true"
    note = run["agentctl"]["truncation"]
    assert note["truncated"] is True and note["fields"] == ["agentctl.run.stdout"]
    assert note["original_bytes"] > 64_000
    jsonschema.validate(run, _schema("ecs.schema.json"))
    hec_doc = next(r for r in _records(hec_text) if r["host"] == "gpu-01")
    assert hec_doc["fields"]["agentctl_truncated"] == "true"
    assert hec_doc["event"]["labels"]["agentctl_truncated"] == "true"
    assert all(len(line.encode()) <= 64 * 1024 for line in text.splitlines())


def test_a_long_message_is_cut_in_every_format(tmp_path: Path) -> None:
    long = "NVRM: Xid 79 " + "y" * 1800 + f" HF_TOKEN={HF} end-of-line"
    with Store.open(f"sqlite:///{tmp_path / 'm.db'}") as st:
        _fill(st, huge=long)
        limits = Limits(field_bytes=512)
        ecs_doc = _records(_export(st, "ecs", "events", limits=limits)[0])[0]
        ocsf_doc = _records(_export(st, "ocsf", "events", limits=limits)[0])[0]
    for doc in (ecs_doc, ocsf_doc):
        assert HF not in json.dumps(doc)
        assert "…[truncated " in doc["message"] and doc["message"].endswith("end-of-line")
    assert "message" in ecs_doc["agentctl"]["truncation"]["fields"]
    assert "message" in ocsf_doc["unmapped"]["agentctl"]["truncation"]["fields"]
    jsonschema.validate(ocsf_doc, _schema("ocsf-base.schema.json"))


def test_the_marker_counts_exactly_the_bytes_cut() -> None:
    text = "é" * 5000  # 10,000 bytes, two per character: cuts never split one
    out, cut = cut_text(text, 1000)
    assert len(out.encode()) <= 1000
    head, _, rest = out.partition("…[truncated ")
    n = int(rest.split(" ")[0])
    tail = rest.split("]…", 1)[1]
    assert n == cut == 10_000 - len(head.encode()) - len(tail.encode())
    assert cut_text("short", 1000) == ("short", 0)


def test_long_arrays_are_cut_and_counted(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'a.db'}") as st:
        _fill(st, gpus=100)
        inv = {r["host"]["name"]: r for r in _records(_export(st, "ecs", "inventory")[0])}
    devices = inv["gpu-01"]["agentctl"]["gpu"]["devices"]
    assert len(devices) == 64
    note = inv["gpu-01"]["agentctl"]["truncation"]
    assert note["arrays_omitted"] == {"agentctl.gpu.devices": 36}
    assert inv["gpu-01"]["agentctl"]["gpu"]["count"] == 100  # the count says the truth


def test_the_record_cap_shrinks_fields_then_drops_what_is_not_required() -> None:
    marks: list[dict[str, Any]] = []

    def mark(doc: dict[str, Any], note: dict[str, Any]) -> None:
        marks.append(note)
        doc["note"] = note

    protect = frozenset({("id",), ("note",)})
    many = {"id": "r1", "bulk": {f"k{i}": "v" * 200 for i in range(200)}, "text": "t" * 5000}
    out, cut = bound(many, Limits(field_bytes=1024, record_bytes=2048), mark, protect)
    assert cut and out["id"] == "r1"
    assert "bulk" not in out and "bulk" in out["note"]["dropped"]
    assert len(json_line(out).encode()) <= 2048
    small = {"id": "r2", "text": "fine"}
    assert bound(small, Limits(), mark, protect) == (small, False)
    with pytest.raises(ValueError, match="field cap"):
        Limits(field_bytes=4096, record_bytes=2048)
    assert MARKER.format(n=3) == "…[truncated 3 bytes]…"


def test_runs_fit_a_small_record_cap(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'r.db'}") as st:
        _fill(st, huge="z" * 100_000)
        limits = Limits(field_bytes=1024, record_bytes=1400)
        text, summary = _export(st, "ecs", "runs", limits=limits)
    for doc in _records(text):
        assert len(json_line(doc).encode()) <= 1400
        jsonschema.validate(doc, _schema("ecs.schema.json"))
    assert summary.truncated_records == 1


# -- the frame -----------------------------------------------------------------------------


def _write(store: Store, path: Path, fmt: str = "ecs", kind: str = "events") -> bytes:
    text, _ = _export(store, fmt, kind)
    path.write_text(text, encoding="utf-8")
    return path.read_bytes()


def test_header_and_trailer_frame_the_records(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    data = _write(store, path)
    lines = data.decode().splitlines()
    header = json.loads(lines[0])["agentctl_export"]
    assert header == {
        "version": 1,
        "schema": "agentctl.export/1",
        "format": "ecs",
        "kind": "events",
        "since": None,
        "created_at": "2026-11-21T00:00:00Z",
        "tool": "agentctl",
        "tool_version": header["tool_version"],
    }
    trailer = json.loads(lines[-1])["agentctl_export_end"]
    import hashlib

    body = "".join(line + "\n" for line in lines[1:-1]).encode()
    assert trailer["count"] == 2 and trailer["sha256"] == hashlib.sha256(body).hexdigest()
    result = verify_file(path)
    assert result.ok, result.problems
    assert result.records == 2


def test_verify_file_detects_cut_and_edited_files(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    data = _write(store, path)
    lines = data.split(b"\n")

    def problems(blob: bytes) -> str:
        path.write_bytes(blob)
        result = verify_file(path)
        assert not result.ok
        return "; ".join(result.problems)

    cut_mid_record = data[: len(lines[0]) + 1 + len(lines[1]) // 2]
    assert "cut off mid-line" in problems(cut_mid_record)
    assert "no trailer" in problems(cut_mid_record)
    assert "no trailer" in problems(b"\n".join(lines[:-2]) + b"\n")  # trailer line gone
    dropped = b"\n".join([lines[0], lines[2], lines[3]]) + b"\n"
    assert "counts 2 records, the file holds 1" in problems(dropped)
    edited = data.replace(b"fallen off", b"fallen 0ff")
    assert "sha256 differs" in problems(edited)
    assert "empty" in problems(b"")
    assert "not an agentctl export" in problems(b'{"a":1}\n')
    doubled = b"\n".join([lines[0], lines[1], lines[0], lines[2], lines[3]]) + b"\n"
    assert "frame line inside" in problems(doubled)
