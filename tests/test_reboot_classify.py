"""Reboot-cause classifier on fixture evidence: every class, conflicts, missing sources.

Fixtures: tests/fixtures/diag/reboot/<scenario>/<probe>.txt, with every line's origin labelled
in that directory's README.md ([V] verbatim from the research note, [S] source format, [C]
composed).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentctl.ctl.diag.probe import ProbeResult, ProbeStatus, result
from agentctl.ctl.diag.reboot import (
    CLASSES,
    CONFIDENCES,
    DEFAULT_POLICY,
    PROBE_NAMES,
    REBOOT_PROBES,
    Evidence,
    RebootReport,
    WindowPolicy,
    analyze,
    render_text,
)

FIXTURES = Path(__file__).parent / "fixtures" / "diag" / "reboot"


def load_fixture(scenario: str) -> dict[str, ProbeResult]:
    """A scenario directory as probe results: `<name>.txt` is the output, `<name>.status` (if
    any) the status; a probe with neither file is absent (not collected)."""
    folder = FIXTURES / scenario
    names = {f.stem for f in folder.iterdir() if f.suffix in (".txt", ".status")}
    results: dict[str, ProbeResult] = {}
    for name in sorted(names):
        out, status = folder / f"{name}.txt", folder / f"{name}.status"
        text = out.read_text() if out.exists() else ""
        st_ = ProbeStatus(status.read_text().strip()) if status.exists() else ProbeStatus.OK
        results[name] = result(name, text, st_)
    return results


def run(
    scenario: str, drop: tuple[str, ...] = (), policy: WindowPolicy = DEFAULT_POLICY
) -> RebootReport:
    results = {k: v for k, v in load_fixture(scenario).items() if k not in drop}
    return analyze(results, policy=policy)


EXPECTED = {
    "planned_reboot": ("planned_reboot", "high"),
    "targets_only": ("planned_reboot", "medium"),
    "planned_shutdown": ("planned_shutdown", "high"),
    "power_button": ("planned_shutdown", "high"),
    "kernel_panic_pstore": ("kernel_panic", "high"),
    "stale_pstore": ("unclean_stop_unknown_cause", "low"),
    "kdump_panic": ("kernel_panic", "high"),
    "watchdog_sel": ("watchdog_reset", "high"),
    "watchdog_bootstatus": ("watchdog_reset", "high"),
    "soft_lockup": ("watchdog_reset", "medium"),
    "sel_ac_lost": ("power_loss", "high"),
    "thermal_then_orderly": ("thermal_shutdown", "high"),
    "mce_panic": ("hardware_error", "high"),
    "ghes_panic": ("hardware_error", "high"),
    "xid79_unclean": ("hardware_error", "medium"),
    "firmware_update": ("firmware_update", "medium"),
    "unclean_nothing_else": ("unclean_stop_unknown_cause", "low"),
    "volatile_journal": ("unknown", "low"),
    "conflict_orderly_panic": ("kernel_panic", "medium"),
    "false_positives": ("planned_reboot", "high"),
    "sel_panic_then_watchdog": ("kernel_panic", "high"),
}


def test_every_fixture_directory_has_an_expectation_and_every_class_a_fixture() -> None:
    dirs = {d.name for d in FIXTURES.iterdir() if d.is_dir()}
    assert dirs == set(EXPECTED)
    assert {reason for reason, _ in EXPECTED.values()} == set(CLASSES)


def test_readme_labels_every_fixture_file() -> None:
    readme = (FIXTURES / "README.md").read_text()
    for scenario in EXPECTED:
        section = readme.split(f"## `{scenario}`", 1)[1].split("\n## ", 1)[0]
        for f in (FIXTURES / scenario).iterdir():
            entry = next((ln for ln in section.splitlines() if ln.startswith(f"- `{f.name}`")), "")
            assert entry, f"{scenario}/{f.name} is not labelled"
            tags = re.findall(r"\[([A-Z])\]", entry)
            assert tags and set(tags) <= {"V", "S", "C"}, entry


def test_fixture_files_are_probe_outputs() -> None:
    for scenario in EXPECTED:
        for f in (FIXTURES / scenario).iterdir():
            assert f.stem in PROBE_NAMES, f"{scenario}/{f.name}: no such probe"
            if f.suffix == ".status":
                ProbeStatus(f.read_text().strip())


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_scenario_verdict(scenario: str) -> None:
    report = run(scenario)
    assert (report.reason_code, report.confidence) == EXPECTED[scenario], render_text(report)
    assert report.summary.endswith(".") and "\n" not in report.summary


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_json_shape(scenario: str) -> None:
    doc = run(scenario).to_json()
    assert list(doc) == [
        "reason_code",
        "confidence",
        "summary",
        "window",
        "evidence",
        "contributing",
        "contradicting_evidence",
        "missing_sources",
    ]
    assert set(doc["window"]) == {"prev_boot_id", "prev_last_entry", "current_boot_start"}
    for key in ("evidence", "contributing", "contradicting_evidence"):
        for item in doc[key]:
            assert list(item) == ["source", "ref", "observed_at", "excerpt", "supports", "strength"]
            assert item["strength"] in ("weak", "moderate", "strong")
            assert item["source"] in PROBE_NAMES
    for item in doc["missing_sources"]:
        assert list(item) == ["source", "status", "detail"]
    assert doc["reason_code"] in CLASSES and doc["confidence"] in CONFIDENCES
    json.dumps(doc)


def _sources(items: tuple[Evidence, ...]) -> set[str]:
    return {e.source for e in items}


def test_planned_reboot_window_and_initiator() -> None:
    report = run("planned_reboot")
    assert report.to_json()["window"] == {
        "prev_boot_id": "990bc72bd32a4c8f90b28b649fdfe70e",
        "prev_last_entry": "2026-08-15T17:24:03Z",
        "current_boot_start": "2026-08-15T17:25:10Z",
    }
    assert report.initiator == "user:alice"
    assert not report.contradicting_evidence
    # logind's message reached through two probes (JSON and the tail) counts once
    assert sum("System is rebooting." in e.excerpt for e in report.evidence) == 1


def test_planned_without_the_kernel_log_is_medium() -> None:
    """A thermal shutdown looks orderly: without the kernel log it cannot be excluded."""
    report = run("planned_reboot", drop=("prev_kernel",))
    assert (report.reason_code, report.confidence) == ("planned_reboot", "medium")
    assert "prev_kernel" in {m.source for m in report.missing_sources}


def test_power_button_initiator() -> None:
    assert run("power_button").initiator == "power_button"


def test_stale_pstore_never_counts() -> None:
    report = run("stale_pstore")
    every = report.evidence + report.contributing + report.contradicting_evidence
    assert not {"pstore", "pstore_archive"} & _sources(every)


def test_undated_pstore_panic_is_weak() -> None:
    """Without pstorefs' mtimes a ramoops record cannot be dated: listed, never decisive."""
    report = run("stale_pstore", drop=("pstore_ls",))
    assert report.reason_code == "unclean_stop_unknown_cause"
    weak = [e for e in report.contributing if e.source == "pstore"]
    assert weak and all(e.strength == "weak" for e in weak)


def test_kdump_ignores_apport_files() -> None:
    report = run("kdump_panic")
    assert all("python3" not in e.ref for e in report.evidence + report.contributing)
    assert any(e.source == "kdump_dmesg" and e.strength == "strong" for e in report.evidence)


def test_soft_lockup_without_a_hardware_watchdog_is_low() -> None:
    report = run("soft_lockup", drop=("watchdog_state",))
    assert (report.reason_code, report.confidence) == ("watchdog_reset", "low")


def test_sel_needs_the_bmc_clock_offset() -> None:
    """Without `sel time get` the BMC's EST clock reads as UTC: AC lost falls outside the
    window, and an unclean stop with nothing else is never power_loss."""
    report = run("sel_ac_lost", drop=("ipmi_sel_time",))
    assert (report.reason_code, report.confidence) == ("unclean_stop_unknown_cause", "low")


def test_sel_skew_is_configurable() -> None:
    tight = WindowPolicy(sel_skew=WindowPolicy().slack * 0)
    assert run("watchdog_sel", policy=tight).reason_code == "watchdog_reset"
    report = run("sel_panic_then_watchdog", drop=("ipmi_sel_time",))
    assert report.reason_code == "unclean_stop_unknown_cause"


def test_thermal_wins_and_the_orderly_markers_contribute() -> None:
    report = run("thermal_then_orderly")
    assert not report.contradicting_evidence
    assert {e.supports for e in report.contributing} >= {"planned_shutdown", "orderly_stop"}


def test_fatal_mce_then_panic_lists_the_panic_as_evidence() -> None:
    report = run("mce_panic")
    kinds = {e.supports for e in report.evidence}
    assert "hardware_error" in kinds and report.contradicting_evidence == ()


def test_xid_is_contributing() -> None:
    report = run("xid79_unclean")
    xids = [e for e in report.contributing if "NVRM" in e.excerpt]
    assert len(xids) == 3 and all(e.supports == "hardware_error" for e in xids)
    assert not any(": 13," in e.excerpt or ": 154," in e.excerpt for e in report.contributing)


def test_firmware_update_needs_a_matching_time() -> None:
    report = run("firmware_update")
    assert any(e.source == "fwupd_history" for e in report.evidence)
    assert all("Dock" not in e.excerpt for e in report.evidence + report.contributing)
    # the same history read at a later boot: the update is not this reboot's
    late = load_fixture("firmware_update")
    doc = json.loads(late["fwupd_history"].output)
    for d in doc["Devices"]:
        d["Created"] -= 86400 * 30
        d["Modified"] -= 86400 * 30
    late["fwupd_history"] = result("fwupd_history", json.dumps(doc))
    assert (analyze(late).reason_code, analyze(late).confidence) == ("planned_reboot", "high")


def test_unclean_stop_is_never_power_loss_without_out_of_band_evidence() -> None:
    report = run("unclean_nothing_else")
    assert report.reason_code == "unclean_stop_unknown_cause"
    missing = {m.source: m.status for m in report.missing_sources}
    assert missing["ipmi_sel"] == "missing_tool"
    assert missing["ras"] == "permission_denied"
    assert missing["pstore"] == "permission_denied"
    for scenario in EXPECTED:
        r = run(scenario)
        if r.reason_code == "power_loss":
            assert any(e.source == "ipmi_sel" for e in r.evidence)


def test_volatile_journal_lists_missing_sources() -> None:
    report = run("volatile_journal")
    missing = {m.source: m for m in report.missing_sources}
    for name in ("prev_journal_tail", "prev_kernel", "prev_logind"):
        assert missing[name].status == "not_supported"
        assert "no persistent journal" in missing[name].detail
    assert missing["last"].status == "failed"
    assert report.window.prev_last_entry is None and report.window.current_boot_start is not None


def test_volatile_notice_with_status_ok_is_never_read_as_the_previous_boot() -> None:
    results = load_fixture("volatile_journal")
    notice = results["prev_journal_tail"].output
    # some runners keep exit 1 as ok when output is present; the notice still wins
    results["prev_journal_tail"] = result("prev_journal_tail", notice + "\n" + "x" * 3)
    assert analyze(results).reason_code == "unknown"


def test_conflict_lowers_the_confidence_and_lists_the_other_side() -> None:
    report = run("conflict_orderly_panic")
    assert report.evidence[0].source == "pstore"
    assert {"prev_journal_tail", "prev_logind", "last"} <= _sources(report.contradicting_evidence)
    assert "disagree" in report.summary


def test_false_positive_lines_change_nothing() -> None:
    report = run("false_positives")
    every = report.evidence + report.contributing + report.contradicting_evidence
    assert "prev_kernel" not in _sources(every)
    assert run("planned_reboot").to_json()["evidence"] == report.to_json()["evidence"]


def test_panic_then_watchdog_is_one_chain() -> None:
    report = run("sel_panic_then_watchdog")
    assert not report.contradicting_evidence
    assert any(e.supports == "watchdog_reset" for e in report.contributing)


def test_absent_and_failed_probes_are_missing_sources() -> None:
    results = load_fixture("planned_reboot")
    results["ras"] = ProbeResult("ras", ProbeStatus.TIMEOUT, timed_out=True)
    report = analyze(results)
    missing = {m.source: m for m in report.missing_sources}
    assert missing["ras"].status == "timeout" and missing["ras"].detail == "timed out"
    assert missing["kdump_ls"].status == "not_collected"
    assert "boots" not in missing and report.confidence == "high"


def test_nothing_at_all_is_unknown() -> None:
    report = analyze({})
    assert (report.reason_code, report.confidence) == ("unknown", "low")
    assert {m.source for m in report.missing_sources} == set(PROBE_NAMES)


def test_window_falls_back_to_uptime_and_now() -> None:
    results = load_fixture("planned_reboot")
    for name in ("boots", "cur_boot_head", "date"):
        del results[name]
    now = datetime(2026, 8, 15, 18, 10, 0)  # naive: read as UTC
    report = analyze(results, now=now)
    assert report.window.current_boot_start is not None
    assert report.to_json()["window"] == {
        "prev_boot_id": "990bc72bd32a4c8f90b28b649fdfe70e",  # from logind's JSON entry
        "prev_last_entry": "2026-08-15T17:24:03Z",  # from the journal tail itself
        "current_boot_start": "2026-08-15T17:25:10Z",  # now - /proc/uptime
    }
    assert report.reason_code == "planned_reboot"


def test_missing_sources_only_lower_the_confidence() -> None:
    """Dropping a probe that supplied no listed record never raises the confidence."""
    rank = CONFIDENCES.index
    for scenario in EXPECTED:
        full = run(scenario)
        used = _sources(full.evidence + full.contributing + full.contradicting_evidence)
        for name in load_fixture(scenario):
            if name in used:
                continue
            less = run(scenario, drop=(name,))
            assert rank(less.confidence) <= rank(full.confidence), (scenario, name)


def test_absence_alone_is_low() -> None:
    """A previous-boot tail with no shutdown sequence, and no next-boot or wtmp records."""
    results = load_fixture("unclean_nothing_else")
    for name in ("cur_boot_head", "cur_journald", "last"):
        del results[name]
    report = analyze(results)
    assert (report.reason_code, report.confidence) == ("unclean_stop_unknown_cause", "low")
    assert not report.evidence


def test_render_text() -> None:
    text = render_text(run("conflict_orderly_panic"))
    assert text.startswith("Reboot cause: kernel_panic (confidence: medium)\n")
    assert "Contradicting evidence:" in text and "Missing sources:" in text


def _window(text: str) -> str:
    return next(ln for ln in text.splitlines() if ln.startswith("Window: "))


def test_render_text_window_shows_what_is_known() -> None:
    assert _window(render_text(run("planned_reboot"))) == (
        "Window: previous boot 990bc72bd32a4c8f90b28b649fdfe70e, last entry "
        "2026-08-15T17:24:03Z -> current boot start 2026-08-15T17:25:10Z"
    )


def test_render_text_window_says_why_a_bound_is_unknown() -> None:
    """A volatile journal keeps no previous boot: say so instead of printing `?`."""
    assert _window(render_text(run("volatile_journal"))) == (
        "Window: previous boot unknown (no previous boot in the journal), last entry unknown "
        "(no previous-boot journal) -> current boot start 2026-07-22T13:29:55Z"
    )
    nothing = _window(render_text(analyze({})))
    assert "current boot start unknown (no boot list," in nothing
    assert "?" not in nothing


def test_probe_specs_are_read_only_and_bounded() -> None:
    names = [p.name for p in REBOOT_PROBES]
    assert len(names) == len(set(names))
    for spec in REBOOT_PROBES:
        assert spec.timeout <= 10
        assert "/dev/watchdog" not in spec.describe()
        assert "sysrq" not in spec.describe().lower()
        assert not spec.optional
    by_name = {p.name: p for p in REBOOT_PROBES}
    assert by_name["ipmi_sel"].root and by_name["ras"].root and by_name["prev_kernel"].root
    assert by_name["prev_journal_tail"].keep == "tail"


# ---------------------------------------------------------------- never raise

statuses = st.sampled_from(list(ProbeStatus))
probe_text = st.one_of(
    st.text(max_size=300),
    st.sampled_from(
        [
            (FIXTURES / s / f).read_text()
            for s in ("sel_ac_lost", "kernel_panic_pstore", "planned_reboot", "firmware_update")
            for f in ("ipmi_sel.txt", "pstore.txt", "prev_journal_tail.txt", "fwupd_history.txt")
            if (FIXTURES / s / f).exists()
        ]
    ),
)


@settings(max_examples=200, deadline=None)
@given(
    outputs=st.dictionaries(st.sampled_from(PROBE_NAMES), st.tuples(probe_text, statuses)),
    now=st.none() | st.datetimes(timezones=st.just(UTC)),
)
def test_analyze_never_raises(
    outputs: dict[str, tuple[str, ProbeStatus]], now: datetime | None
) -> None:
    results = {k: result(k, text, status) for k, (text, status) in outputs.items()}
    report = analyze(results, now=now)
    assert report.reason_code in CLASSES and report.confidence in CONFIDENCES
    json.dumps(report.to_json())
    assert not re.search(r"(boot|entry|start) \?", _window(render_text(report)))


@settings(max_examples=100, deadline=None)
@given(
    scenario=st.sampled_from(sorted(EXPECTED)),
    junk=st.dictionaries(st.sampled_from(PROBE_NAMES), st.text(max_size=200), max_size=3),
)
def test_analyze_survives_junk_in_real_scenarios(scenario: str, junk: dict[str, str]) -> None:
    results = load_fixture(scenario)
    results.update({k: result(k, v) for k, v in junk.items()})
    assert analyze(results).reason_code in CLASSES


def test_archived_pstore_is_dated_by_when_systemd_pstore_moved_it() -> None:
    """An archived ramoops record has no time of its own: archived at this boot, it is a
    moderate sign of a panic (medium); archived at an earlier boot, it is stale."""
    results = load_fixture("unclean_nothing_else")
    record = (  # [C] glob framing; [V] the note's header and panic line
        "==> /var/lib/systemd/pstore/1/dmesg-ramoops-0 <==\n"
        "Panic#1 Part1\n<0>[ 5231.135213] Kernel panic - not syncing: Fatal exception\n"
    )
    results["pstore_archive"] = result("pstore_archive", record)
    for mtime, want in (
        ("2025-01-07T15:04:31Z", ("kernel_panic", "medium")),
        ("2024-11-02T08:00:00Z", ("unclean_stop_unknown_cause", "low")),
    ):
        listing = f"{mtime} 4096 f /var/lib/systemd/pstore/1/dmesg-ramoops-0\n"
        results["pstore_archive_ls"] = result("pstore_archive_ls", listing)
        report = analyze(results)
        assert (report.reason_code, report.confidence) == want
