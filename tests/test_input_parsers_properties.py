"""Parsers of what nodes send back (nvidia-smi, /proc, df, dmesg, Prometheus text, facts) and of
what users hand in (inventory files) never raise anything but their documented error: arbitrary
text, control characters (`\\r` inside a CSV field, ESC, NUL), number-like junk (`--5`)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agentctl.collectors.gpu import smi, xid
from agentctl.collectors.gpu.smi import SMI_FIELDS, parse_smi_csv
from agentctl.collectors.host import parse as host
from agentctl.collectors.serving import promtext
from agentctl.ctl.cli import main
from agentctl.ctl.diag.l1 import parse as l1
from agentctl.ctl.errors import ExitCode, InventoryError
from agentctl.ctl.facts import gpus, os_release
from agentctl.ctl.inventory import load_inventory

JUNK = ["--5", "--1", "+-1", "-", "1e999", "nan", "[N/A]", "\r", "\r\n", '"', "\x1b", "\x00",
        "\u0663", "99999999999999999999999", ", ", ": ", " kB", " MiB", " W", "0x"]  # fmt: skip
texts = st.one_of(
    st.text(),
    st.lists(st.sampled_from(JUNK) | st.text(max_size=12), max_size=30).map("".join),
)

PARSERS = [
    smi.parse_nvidia_smi_q,
    xid.parse_xid_line,
    host.parse_cpu_line,
    host.parse_meminfo,
    host.parse_loadavg,
    host.parse_df,
    gpus.parse,
    os_release.parse_os_release,
    l1.parse_mounts,
    l1.parse_loadavg,
    l1.parse_cpu_list,
    l1.parse_net_dev,
    l1.parse_net_links,
    l1.parse_chrony,
    l1.parse_timedatectl,
    l1.parse_smi_q_temps,
    l1.parse_xid_log,
    l1.parse_services,
    l1.parse_health,
]


def _smi_rows() -> st.SearchStrategy[str]:
    cell = st.one_of(st.sampled_from([*JUNK, "0", "81559 MiB", "Enabled", "0x1"]),
                     st.text(max_size=8))  # fmt: skip
    row = st.lists(cell, min_size=len(SMI_FIELDS) - 1, max_size=len(SMI_FIELDS) + 1)
    return st.lists(row.map(", ".join), max_size=4).map("\n".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts)
def test_no_node_output_parser_raises(text: str) -> None:
    for parser in PARSERS:
        parser(text)
    with contextlib.suppress(promtext.PromTextError):  # its documented refusal
        promtext.parse(text)


@settings(max_examples=300, deadline=None)
@given(text=_smi_rows())
@example(text="0, GPU-1, H100\r80GB, 00000000:01:00.0")  # a \r inside a field
@example(text='0, "GPU-1, H100')  # a quote never closed
def test_smi_csv_never_raises_and_keeps_one_sample_per_row(text: str) -> None:
    """Each line is a GPU; a bad line is errors on its fields, never an exception."""
    samples = parse_smi_csv(text)
    assert len(samples) <= len([line for line in text.splitlines() if line.strip()])


def test_a_carriage_return_in_a_field_is_an_error_reading_not_a_raise() -> None:
    row = ", ".join(["0", "GPU-1", "NVIDIA H100\r80GB"] + ["1"] * (len(SMI_FIELDS) - 3))
    samples = parse_smi_csv(row)
    assert samples and all(s.uuid.status.value == "error" for s in samples)


@settings(max_examples=200, deadline=None)
@given(junk=st.text(alphabet=st.sampled_from(list("\x1b\x00\x07\x7f\ufffe\r\t:-[]{}'\"a \n"))),
       at=st.integers(min_value=0, max_value=60))  # fmt: skip
def test_an_inventory_with_control_characters_is_an_inventory_error(
    tmp_path_factory: pytest.TempPathFactory, junk: str, at: int
) -> None:
    good = "all:\n  hosts:\n    node1:\n      ansible_host: 127.0.0.1\n"
    path = tmp_path_factory.mktemp("inv") / "inv.yml"
    path.write_text(good[:at] + junk + good[at:], encoding="utf-8", newline="")
    try:
        load_inventory(path)
    except InventoryError as exc:
        assert exc.path == str(path)


def test_an_esc_byte_names_file_line_and_column_with_the_usage_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], agentctl_env: Path
) -> None:
    path = tmp_path / "inv.yml"
    path.write_text("all:\n  hosts:\n    node\x1b1:\n      ansible_host: 127.0.0.1\n")
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    assert caught.value.line == 3 and "U+001B" in caught.value.message
    assert "column 9" in caught.value.message
    code = main(["-i", str(path), "hosts", "list"])
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE
    assert f"{path}:3" in err and "U+001B" in err and "Traceback" not in err
