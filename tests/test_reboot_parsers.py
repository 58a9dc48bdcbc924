"""Reboot-cause parsers: every format in the research note, anchored markers, and no crashes.

Lines tagged [V] are verbatim from shared/research/diagnostics-anchors.md; [S] follow a
source's documented format; [C] are composed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentctl.ctl.diag.reboot import parse as p


def T(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=UTC)


# ---------------------------------------------------------------- times


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("2026-08-15T19:24:02+02:00", T(2026, 8, 15, 17, 24, 2)),
        ("2026-08-15T19:24:02+0200", T(2026, 8, 15, 17, 24, 2)),
        ("2026-08-15T19:24:02.123456-04:00", T(2026, 8, 15, 23, 24, 2, 123456)),
        ("2025-01-21T04:41:44,283302+00:00", T(2025, 1, 21, 4, 41, 44, 283302)),
        ("2025-01-07 10:01:00 +0000", T(2025, 1, 7, 10, 1, 0)),
        ("2026-09-06 14:04:50 EDT", T(2026, 9, 6, 18, 4, 50)),
        ("2026-09-06T14:04:50Z", T(2026, 9, 6, 14, 4, 50)),
        ("2026-09-06 14:04:50 CST", None),  # ambiguous zone: no time rather than a wrong one
        ("2026-13-06T14:04:50Z", None),
        ("not a time", None),
    ],
)
def test_parse_iso(text: str, want: datetime | None) -> None:
    assert p.parse_iso(text) == want


def test_parse_ctime_reads_last_full_times_as_utc() -> None:
    assert p.parse_ctime("Sun Sep  6 15:12:28 2026") == T(2026, 9, 6, 15, 12, 28)  # [V]
    assert p.parse_ctime("Sun Aug 23 11:24:54 2026") == T(2026, 8, 23, 11, 24, 54)
    assert p.parse_ctime("Sun Foo 23 11:24:54 2026") is None


# ---------------------------------------------------------------- journal and dmesg lines


def test_short_iso_line_splits_identifier_and_pid() -> None:
    line = p.parse_log_line("2026-08-15T19:24:02+02:00 n systemd-logind[812]: System is rebooting.")
    assert line is not None
    assert line.time == T(2026, 8, 15, 17, 24, 2)
    assert (line.ident, line.pid, line.message) == ("systemd-logind", 812, "System is rebooting.")


def test_short_format_line_keeps_the_message_without_a_year() -> None:
    line = p.parse_log_line(  # [V] next boot after an unclean stop
        "Nov 09 03:24:52 pve systemd-journald[347]: File /var/log/journal/0cc9347330104bc28ba4493c"
        "0a06400b/system.journal corrupted or uncleanly shut down, renaming and replacing."
    )
    assert line is not None and line.time is None and line.ident == "systemd-journald"
    marker = p.match_marker(line)
    assert marker is not None and marker.kind == "unclean_journal"


@pytest.mark.parametrize(
    ("raw", "message", "mono"),
    [
        (  # [V]
            "[155044.078590] NVRM: Xid (PCI:0000:06:00): 79, GPU has fallen off the bus.",
            "NVRM: Xid (PCI:0000:06:00): 79, GPU has fallen off the bus.",
            155044.07859,
        ),
        (  # [V] pstore
            "<0>[ 5231.135213] Kernel panic - not syncing: Fatal exception",
            "Kernel panic - not syncing: Fatal exception",
            5231.135213,
        ),
        (  # [V] caller id
            "[ 130.456250] [ T1946] NVRM: Xid (PCI:0000:2b:00): 31, pid=1942, name=llama-bench, x",
            "NVRM: Xid (PCI:0000:2b:00): 31, pid=1942, name=llama-bench, x",
            130.45625,
        ),
    ],
)
def test_dmesg_lines(raw: str, message: str, mono: float) -> None:
    line = p.parse_log_line(raw)
    assert line is not None and line.message == message and line.mono == pytest.approx(mono)


def test_dmesg_x_line_has_a_time() -> None:
    line = p.parse_log_line(  # [V]
        "kern  :warn  : 2025-01-21T04:41:44,283302+00:00 NVRM: Xid (PCI:0000:38:00): 13, pid='<unk"
        "nown>', name=<unknown>, Graphics SM Global Exception on (GPC 8, TPC 5, SM 1): Multiple"
        " Warp Errors"
    )
    assert line is not None and line.time == T(2025, 1, 21, 4, 41, 44, 283302)
    assert line.message.startswith("NVRM: Xid (PCI:0000:38:00): 13")


def test_journalctl_meta_lines_are_skipped() -> None:
    assert p.parse_log("-- No entries --\n-- Boot 990bc72bd32a4c8f90b28b649fdfe70e --\n\n") == ()


@pytest.mark.parametrize(
    ("text", "status"),
    [
        (  # [S] quoted in the issue
            "Specifying boot ID or boot offset has no effect, no persistent journal was found.",
            "not_supported",
        ),
        ("Specifying boot ID has no effect, no persistent journal was found", "not_supported"),
        ("Data from the specified boot (-1) is not available: No such boot ID in journal", None),
        ("Hint: You are currently not seeing messages from other users and the system.", None),
    ],
)
def test_journal_unavailable(text: str, status: str | None) -> None:
    found = p.journal_unavailable(text)
    assert found is not None
    if status:
        assert found[0] == status
    assert p.journal_unavailable("2026-08-15T19:24:02+02:00 n kernel: hello") is None


# ---------------------------------------------------------------- markers

NOTE_TAIL = """\
2026-08-15T19:24:02+02:00 n systemd-logind[812]: System is rebooting.
2026-08-15T19:24:03+02:00 n systemd[1]: Reached target reboot.target - System Reboot.
2026-08-15T19:24:03+02:00 n systemd[1]: Shutting down.
2026-08-15T19:24:03+02:00 n systemd-shutdown[1]: Syncing filesystems and block devices.
2026-08-15T19:24:03+02:00 n systemd-journald[34149]: Received SIGTERM from PID 1 (systemd-shutdow).
2026-08-15T19:24:03+02:00 n systemd-journald[34149]: Journal stopped
"""


def test_note_tail_markers() -> None:
    kinds = [(m.kind, m.detail) for m in p.scan_markers(p.parse_log(NOTE_TAIL))]
    assert kinds == [
        ("logind_shutdown", "reboot"),
        ("target", "reboot"),
        ("shutdown_step", ""),
        ("shutdown_step", ""),
        ("shutdown_step", ""),  # the comm is cut to 15 chars: "systemd-shutdow"
        ("journal_stopped", ""),
    ]


def _kind(raw: str) -> tuple[str, str] | None:
    line = p.parse_log_line(raw)
    m = p.match_marker(line) if line else None
    return (m.kind, m.detail) if m else None


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        # [V] kernel lines from the note (bare, as a console or pstore shows them)
        ("watchdog: Watchdog detected hard LOCKUP on cpu 3", ("lockup", "hard")),
        (
            "Kernel panic - not syncing: Watchdog detected hard LOCKUP on cpu 0",
            ("panic", "Watchdog detected hard LOCKUP on cpu 0"),
        ),
        (
            "thermal thermal_zone0: cpu-thermal: critical temperature reached, shutting down",
            ("thermal_critical", ""),
        ),
        ("reboot: HARDWARE PROTECTION shutdown (Temperature too high)", ("thermal_critical", "")),
        ("mce: [Hardware Error]: Machine check events logged", ("mce_logged", "")),
        # [C] from the note
        ("watchdog: BUG: soft lockup - CPU#12 stuck for 23s! [python3:48213]", ("lockup", "soft")),
        ("INFO: task kworker/u64:2:913 blocked for more than 122 seconds.", ("hung_task", "")),
        (
            "Out of memory: Killed process 48213 (python3) total-vm:98321440kB,"
            " anon-rss:90112000kB, file-rss:1024kB, shmem-rss:0kB",
            ("oom", ""),
        ),
        ("{1}[Hardware Error]: event severity: fatal", ("ghes_fatal", "")),
        # [S] formats
        ("NMI watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [kworker:1]", ("lockup", "soft")),
        ("rcu: INFO: rcu_preempt self-detected stall on CPU", ("lockup", "rcu")),
        ("pcieport 0000:00:01.0: AER: Uncorrected (Fatal) error received: 0000:01:00.0", None),
        ("reboot: Restarting system", ("kernel_final", "reboot")),
        ("reboot: Power down", ("kernel_final", "poweroff")),
        ("NVRM: GPU 0000:18:00.0: GPU has fallen off the bus.", ("xid", "79")),
        # journal lines with identifiers
        ("2026-01-01T00:00:00Z n systemd[1]: Reached target System Reboot.", ("target", "reboot")),
        ("2026-01-01T00:00:00Z n systemd[1]: Reached target Shutdown.", ("target", "")),
        (
            "2026-01-01T00:00:00Z n systemd[1]: Reached target poweroff.target - System Power Off.",
            ("target", "poweroff"),
        ),
        ("2026-01-01T00:00:00Z n systemd-logind[9]: Power key pressed short.", ("power_key", "")),
        (
            "2026-01-01T00:00:00Z n systemd-logind[9]: Powering Off...",
            ("logind_action", "poweroff"),
        ),
        (
            "2026-01-01T00:00:00Z n systemd-logind[9]: System is rebooting (kernel update).",
            ("logind_shutdown", "reboot"),
        ),
        (
            "2026-01-01T00:00:00Z n sudo[1]:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ;"
            " COMMAND=/usr/bin/systemctl reboot",
            ("initiator", "user:alice"),
        ),
        (
            "2026-01-01T00:00:00Z n upsmon[77]: Executing automatic power-fail shutdown",
            ("initiator", "ups"),
        ),
        (
            "2026-01-01T00:00:00Z n kernel: EXT4-fs (nvme0n1p2): recovery complete",
            ("fs_recovery", ""),
        ),
        ("XFS (sda1): Starting recovery (logdev: internal)", ("fs_recovery", "")),
    ],
)
def test_markers(raw: str, want: tuple[str, str] | None) -> None:
    if raw.startswith("pcieport"):  # the AER line is a marker: checked on its own below
        assert _kind(raw) == ("aer_fatal", "")
        return
    assert _kind(raw) == want


@pytest.mark.parametrize(
    "raw",
    [
        # reset_reason_reporter's substring false positives: none may count [V]/[C]
        "Kernel command line: BOOT_IMAGE=/vmlinuz-6.8.0 root=UUID=4c1e ro panic=10 nmi_watchdog=1",
        "NMI watchdog: Enabled. Permanently consumes one hw-PMU counter.",
        "ata1: hard resetting link",
        "---[ end Kernel panic - not syncing: Fatal exception ]---",
        "2026-01-01T00:00:00Z n systemd[1]: Reached target Multi-User System.",
        "2026-01-01T00:00:00Z n systemd[1]: Reached target shutdown-hooks.target - Hooks.",
        # journald restarted by PID 1 (comm "systemd"), not a shutdown
        "2026-01-01T00:00:00Z n systemd-journald[5]: Received SIGTERM from PID 1 (systemd).",
        # the right words from the wrong process
        "2026-01-01T00:00:00Z n bash[5]: System is rebooting.",
        "2026-01-01T00:00:00Z n python3[5]: Kernel panic - not syncing: Fatal exception",
        "2026-01-01T00:00:00Z n sudo[1]:  bob : TTY=pts/0 ; COMMAND=/usr/bin/less /var/log/syslog",
    ],
)
def test_false_positives_are_not_markers(raw: str) -> None:
    assert _kind(raw) is None


def test_xid_markers_and_what_counts() -> None:
    lines = {  # [V] from the note, except 154 to 0x2 [C] and the no-code line [S]
        79: "NVRM: Xid (PCI:0004:01:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off"
        " the bus.",
        119: "NVRM: Xid (PCI:0004:01:00): 119, pid=430, name=nv_queue, Timeout waiting for RPC"
        " from GSP!",
        13: "kernel: NVRM: Xid (PCI:0000:c1:00): 74, pid='<unknown>', name=<unknown>, NVLink:"
        " fatal error detected on link 1",
        154: "NVRM: Xid (PCI:0009:01:00): 154, GPU recovery action changed from 0x0 (None) to"
        " 0x4 (Drain and Reset)",
        1540: "NVRM: Xid (PCI:0009:01:00): 154, GPU recovery action changed from 0x0 (None) to"
        " 0x2 (Node Reboot Required)",
    }
    markers = {k: p.match_marker(p.LogLine(1, v, v)) for k, v in lines.items()}
    assert markers[79] is not None and p.xid_is_node_fatal(markers[79])
    assert markers[119] is not None and p.xid_is_node_fatal(markers[119])
    assert markers[13] is None  # "kernel: NVRM ..." bare: the message must start with NVRM
    assert markers[154] is not None and not p.xid_is_node_fatal(markers[154])
    assert not p.xid_is_critical(markers[154])
    assert markers[1540] is not None and p.xid_is_node_fatal(markers[1540])


# ---------------------------------------------------------------- boots


def test_boots_new_table_with_header() -> None:
    text = (  # [V]
        "IDX BOOT ID                          FIRST ENTRY                 LAST ENTRY\n"
        " -1 990bc72bd32a4c8f90b28b649fdfe70e Sun 2026-08-23 11:26:39 EDT Sun 2026-09-06 14:04:50"
        " EDT\n"
        "  0 fdc2784f934d486b86afa477da71321a Sun 2026-09-06 15:13:52 EDT Sun 2026-09-06 15:23:31"
        " EDT\n"
    )
    prev, cur = p.parse_boots(text)
    assert (prev.index, prev.boot_id) == (-1, "990bc72bd32a4c8f90b28b649fdfe70e")
    assert prev.first == T(2026, 8, 23, 15, 26, 39) and prev.last == T(2026, 9, 6, 18, 4, 50)
    assert cur.first == T(2026, 9, 6, 19, 13, 52)


def test_boots_old_table_with_em_dash() -> None:
    text = (
        " -1 e5f6a7b8c9d04e1f8a2b3c4d5e6f7081 Mon 2025-01-06 18:01:00 EST—Tue 2025-01-07 10:00:00"
        " EST"
    )
    (boot,) = p.parse_boots(text)  # [V] (the note marks it C)
    assert boot.index == -1 and boot.last == T(2025, 1, 7, 15, 0, 0)


def test_boots_json_and_a_capture_cut_at_its_head() -> None:
    rows = [
        {"index": -1, "boot_id": "a" * 32, "first_entry": 1_700_000_000_000_000, "last_entry": 1},
        {"index": 0, "boot_id": "b" * 32, "first_entry": "1700000100000000", "last_entry": None},
    ]
    text = json.dumps(rows)
    assert [b.index for b in p.parse_boots(text)] == [-1, 0]
    assert p.parse_boots(text)[1].first == T(2023, 11, 14, 22, 15, 0)
    cut = text[20:]  # keep="tail" cut the start of the array
    (only,) = p.parse_boots(cut)
    assert only.boot_id == "b" * 32 and only.last is None


# ---------------------------------------------------------------- journal JSON


def test_journal_json_entries() -> None:
    obj = {
        "__REALTIME_TIMESTAMP": "1786814642000000",
        "_BOOT_ID": "990bc72bd32a4c8f90b28b649fdfe70e",
        "MESSAGE_ID": p.SHUTDOWN_MESSAGE_ID,
        "MESSAGE": "System is rebooting.",
        "SHUTDOWN": "reboot",
        "SYSLOG_IDENTIFIER": "systemd-logind",
        "_PID": "812",
    }
    binary = {"MESSAGE": list(b"Power key pressed short."), "SYSLOG_IDENTIFIER": "systemd-logind"}
    text = json.dumps(obj) + "\n" + json.dumps(binary) + "\n{broken\n-- No entries --\n"
    first, second = p.parse_journal_json(text)
    assert first.shutdown == "reboot" and first.pid == 812 and first.time is not None
    assert second.message == "Power key pressed short." and second.time is None


# ---------------------------------------------------------------- wtmp

NOTE_LAST = (
    "reboot   system boot  6.12.107+deb13-a Sun Sep  6 15:12:28 2026 - still running\n"
    "shutdown system down  6.12.101+deb13-a Sun Sep  6 15:05:35 2026 - Sun Sep  6 15:12:28 2026"
    "  (00:06)\n"
    "reboot   system boot  6.12.101+deb13-a Sun Aug 23 11:24:54 2026 - Sun Sep  6 15:05:35 2026"
    " (14+03:40)\n"
    "alice    pts/0        10.0.0.5         Sun Aug 23 12:00:01 2026 - crash                    "
    " (05:10)\n"
    "\n"
    "wtmp begins Sun Aug 23 11:24:54 2026\n"
)


def test_last_full_times() -> None:
    boot, down, prev, alice = p.parse_last(NOTE_LAST)  # [V] (the crash line is the note's C)
    assert (boot.user, boot.tty, boot.end_state) == ("reboot", "system boot", "still running")
    assert boot.start == T(2026, 9, 6, 15, 12, 28) and boot.detail == "6.12.107+deb13-a"
    assert (down.user, down.end_state, down.end) == ("shutdown", "time", T(2026, 9, 6, 15, 12, 28))
    assert prev.end == T(2026, 9, 6, 15, 5, 35)
    assert (alice.user, alice.detail, alice.end_state) == ("alice", "10.0.0.5", "crash")


# ---------------------------------------------------------------- SEL

NOTE_SEL = """\
   1 | 01/07/2025 | 09:58:12 | Power Unit #0x01 | AC lost | Asserted
   2 | 01/07/2025 | 10:00:41 | Power Unit #0x01 | Power off/down | Asserted
   3 | 01/07/2025 | 10:02:05 | Watchdog2 #0x81 | Hard reset | Asserted
   4 | 01/07/2025 | 10:03:10 | System Boot Initiated #0x22 | Initiated by hard reset | Asserted
   5 | 01/07/2025 | 10:05:33 | Temperature CPU0 Temp | Upper Critical going high | Asserted
   6 | Linux kernel panic: Fatal excep
   7 |  Pre-Init  |0000000012| System Event #0x83 | OEM System boot event | Asserted
"""


def test_sel_rows_of_the_note() -> None:
    rows = p.parse_sel(NOTE_SEL)  # [V] (the note marks them C from ipmitool's printing)
    assert [r.kind for r in rows] == [
        "ac_lost",
        None,
        "watchdog_action",
        "hard_reset_boot",
        "temp_critical",
        "kernel_panic_oem",
        None,
    ]
    assert rows[0].time == T(2025, 1, 7, 9, 58, 12)
    assert rows[5].time is None and rows[5].event == "Linux kernel panic: Fatal excep"
    assert rows[6].pre_init and rows[6].time is None
    assert [r.position for r in rows] == list(range(7))


def test_sel_more_formats() -> None:
    text = (  # [S] ipmitool variants: 12-hour clock, deasserted, PSU, hex ids
        "  1a | 01/07/2025 | 09:58:12 PM | Power Supply PS2 | Power Supply AC lost | Asserted\n"
        "  1b | 01/07/2025 | 10:00:00 | Watchdog2 #0x81 | Hard reset | Deasserted\n"
        "  1c | 01/07/2025 | 10:00:00 | Processor CPU1 | IERR | Asserted\n"
        "SEL has no entries\n"
    )
    a, b, c = p.parse_sel(text)
    assert (a.kind, a.time) == ("psu_ac_lost", T(2025, 1, 7, 21, 58, 12))
    assert b.kind is None and c.kind == "cpu_ierr"
    assert p.parse_sel_time("01/07/2025 10:30:00\n") == T(2025, 1, 7, 10, 30, 0)
    assert p.parse_sel_time("Get SEL Time command failed") is None


# ---------------------------------------------------------------- pstore, kdump, listings


def test_pstore_record_from_the_note() -> None:
    text = (  # [S] header, [V] panic line, glob framing per probe.py
        "==> /sys/fs/pstore/dmesg-efi-170000000001001 <==\n"
        "Panic#1 Part1\n"
        "<0>[ 5231.135213] Kernel panic - not syncing: Fatal exception\n\n"
        "==> /sys/fs/pstore/console-ramoops-0 <==\n"
        "[   12.000000] reboot: Restarting system\n\n"
        "==> /var/lib/systemd/pstore/173626209001001/dmesg.txt <==\n"
        "Oops#1 Part1\n"
    )
    efi, console, archived = p.parse_pstore(text)
    assert (efi.kind, efi.backend, efi.reason) == ("dmesg", "efi", "Panic")
    assert efi.id_time == T(2023, 11, 14, 22, 13, 20)  # (seconds*100+part)*1000+count
    assert [m.kind for m in p.scan_markers(efi.lines)] == ["panic"]
    assert console.kind == "console" and console.id_time is None
    assert archived.archived and archived.reason == "Oops"
    assert archived.id_time == T(2025, 1, 7, 15, 1, 30)


def test_efi_record_time_bounds() -> None:
    assert p.efi_record_time(0) is None
    assert p.efi_record_time(10**19) is None


def test_listing_and_crash_dirs() -> None:
    text = (  # [C] listing format from probe.py
        "2025-01-07T15:01:52Z 4096 d /var/crash/202501071501\n"
        "2025-01-07T15:01:52Z 88120 f /var/crash/202501071501/dmesg.202501071501\n"
        "2024-12-30T09:12:00Z 20480 f /var/crash/_usr_bin_python3.12.1000.crash\n"
        "2025-01-07T15:03:00Z 4096 d /var/crash/127.0.0.1-2025-01-07-10:01:02\n"
        "garbage line\n"
    )
    entries = p.parse_listing(text)
    assert len(entries) == 4 and entries[0].mtime == T(2025, 1, 7, 15, 1, 52)
    dirs = p.crash_dirs(entries)
    assert [d.path for d in dirs] == [
        "/var/crash/202501071501",
        "/var/crash/127.0.0.1-2025-01-07-10:01:02",
    ]
    assert p.crash_dir_time(dirs[0].path) == T(2025, 1, 7, 15, 1, 0)
    assert p.crash_dir_time(dirs[1].path) == T(2025, 1, 7, 10, 1, 2)
    assert p.crash_dir_time("/var/crash/whatever") is None


def test_kdump_logs() -> None:
    text = (
        "==> /var/crash/202501071501/dmesg.202501071501 <==\n"
        "[ 5231.135213] Kernel panic - not syncing: Fatal exception\n"
    )
    (log,) = p.parse_kdump_logs(text)
    assert log.directory == "/var/crash/202501071501"
    assert log.dir_time == T(2025, 1, 7, 15, 1, 0)
    assert p.scan_markers(log.lines)[0].kind == "panic"


def test_watchdog_sysfs() -> None:
    text = (
        "==> /sys/class/watchdog/watchdog0/bootstatus <==\n32\n\n"
        "==> /sys/class/watchdog/watchdog1/bootstatus <==\n0\n"
    )
    a, b = p.parse_watchdog(text)
    assert (a.device, a.attr, a.value) == ("watchdog0", "bootstatus", "32")
    assert p.bootstatus_flags(a.value) == ("CARDRESET",)
    assert p.bootstatus_flags(b.value) == ()
    assert p.bootstatus_flags("0x21") == ("OVERHEAT", "CARDRESET")
    assert p.bootstatus_flags("0x") == () and p.bootstatus_flags("-1") == ()


# ---------------------------------------------------------------- ras, fwupd, scalars


def test_ras_clean_and_events() -> None:
    clean = "No Memory errors.\n\nNo PCIe AER errors.\n\nNo MCE errors.\n"  # [C] from the note
    assert p.parse_ras(clean) == ()
    text = (  # [S] ras-mc-ctl --errors row format: "<id> <timestamp> <text>"
        "PCIe AER events:\n"
        "1 2025-01-07 10:01:00 +0000 0000:01:00.0 Uncorrected (Non-Fatal) error: Poisoned TLP\n"
        "2 2025-01-07 10:01:05 +0000 0000:01:00.0 Uncorrected (Fatal) error: Surprise Down Error\n"
        "\nMCE events:\n"
        "1 2025-01-07 10:01:09 +0000 error: Uncorrected_error, mci=Error_enabled\n"
        "2 2025-01-07 10:01:09 +0000 error: Corrected_error, mci=Error_enabled\n"
    )
    events = p.parse_ras(text)
    assert [(e.section, e.fatal) for e in events] == [
        ("PCIe AER events", False),
        ("PCIe AER events", True),
        ("MCE events", False),  # "Uncorrected_error" is one word: the mci text below decides
        ("MCE events", False),
    ]
    assert events[1].time == T(2025, 1, 7, 10, 1, 5)


def test_fwupd_history() -> None:
    doc = {  # [C] fields of fwupdmgr get-history --json
        "Devices": [
            {
                "Name": "System Firmware",
                "Plugin": "uefi_capsule",
                "Flags": ["needs-reboot", 3],
                "Version": "2.90",
                "Created": 1694166016,
                "Modified": 1694166169,
                "UpdateState": 2,
                "Releases": [{"Version": "2.91"}],
            },
            {"Name": "Dock", "Plugin": "dfu", "UpdateState": "success", "Created": "x"},
            "not a device",
        ]
    }
    fw, dock = p.parse_fwupd_history(json.dumps(doc))
    assert fw.needs_reboot and fw.state == "success" and fw.release == "2.91"
    assert fw.modified == T(2023, 9, 8, 9, 42, 49) and fw.flags == ("needs-reboot",)
    assert not dock.needs_reboot and dock.created is None
    assert p.parse_fwupd_history("No history") == ()


def test_scalars() -> None:
    assert p.parse_uptime("2690.12 134506.00\n") == pytest.approx(2690.12)
    assert p.parse_boot_id("fdc2784f-934d-486b-86af-a477da71321a\n") == (
        "fdc2784f934d486b86afa477da71321a"
    )
    assert p.parse_boot_id("nope") is None
    assert p.parse_epoch("1736262000\n") == T(2025, 1, 7, 15, 0, 0)
    assert p.parse_epoch("-5") is None and p.parse_uptime("") is None


# ---------------------------------------------------------------- never raise

FRAGMENTS = [
    NOTE_TAIL,
    NOTE_LAST,
    NOTE_SEL,
    "==> /sys/fs/pstore/dmesg-efi-99999999999999999999 <==",
    "==> /var/lib/systemd/pstore/123/dmesg.txt <==",
    "Panic#1 Part1",
    "<0>[ 5231.135213] Kernel panic - not syncing: Fatal exception",
    '[{"index": -1, "boot_id": "x", "first_entry": 99999999999999999999999}]',
    '[{"index": 0, "boot_id": "y", "first_entry": 1' + "0" * 400 + "}]",
    '{"__REALTIME_TIMESTAMP": "-1", "MESSAGE": [300, -1], "_PID": "99999999999999999999999"}',
    '{"Devices": [{"Created": 1e400, "Flags": "x", "Releases": [1]}]}',
    "2025-01-07T15:01:52Z 99999999999999999999 d /var/crash/99999999999999",
    "9999-12-31T23:59:59-23:59 h kernel: NVRM: Xid (PCI:0000:01:00): 79, x",
    "0001-01-01T00:00:00+23:59 h systemd[1]: Reached target  - .",
    "   ffffffff | 99/99/9999 | 99:99:99 PM XYZ | Watchdog2 | Hard reset | Asserted",
    " -1 " + "f" * 32 + " Mon 9999-12-31 23:59:59 NZDT—Tue 0001-01-01 00:00:00 HST",
    "[" * 5000,
    "{" * 3000,
    "0x" + "f" * 50,
    "\x00\ud7ff\u2028\u0661\u00b2",
    '{"MESSAGE": "m", "__REALTIME_TIMESTAMP": "--5", "_PID": "+-1"}',
    '[{"index": "--1", "boot_id": "b", "first_entry": "1-1", "last_entry": "\u0663"}]',
]
texts = st.one_of(
    st.text(),
    st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=40), max_size=8).map("\n".join),
)
PARSERS = [
    p.parse_log,
    p.journal_unavailable,
    lambda t: p.scan_markers(p.parse_log(t)),
    p.parse_boots,
    p.parse_journal_json,
    p.parse_last,
    p.parse_sel,
    p.parse_sel_time,
    p.split_glob,
    p.parse_listing,
    p.parse_pstore,
    p.parse_kdump_logs,
    p.crash_dir_time,
    p.parse_watchdog,
    p.bootstatus_flags,
    p.parse_ras,
    p.parse_fwupd_history,
    p.parse_uptime,
    p.parse_boot_id,
    p.parse_epoch,
    p.parse_iso,
    p.parse_ctime,
]


#: what journald's integer fields (strings in its JSON) may hold on a hostile or broken node
_NUMBERISH = st.one_of(
    st.text(alphabet="-+0123456789 .e\u0663\u00b2", max_size=24),
    st.integers(),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
)
_JOURNAL_OBJ = st.fixed_dictionaries(
    {"MESSAGE": st.one_of(st.text(max_size=20), st.lists(st.integers(-1, 300), max_size=4))},
    optional={"__REALTIME_TIMESTAMP": _NUMBERISH, "_PID": _NUMBERISH,
              "_BOOT_ID": _NUMBERISH, "SYSLOG_IDENTIFIER": _NUMBERISH},
)  # fmt: skip
_BOOT_OBJ = st.fixed_dictionaries(
    {"index": _NUMBERISH, "boot_id": st.text(max_size=34)},
    optional={"first_entry": _NUMBERISH, "last_entry": _NUMBERISH},
)


@settings(max_examples=300, deadline=None)
@given(entries=st.lists(_JOURNAL_OBJ, max_size=5), boots=st.lists(_BOOT_OBJ, max_size=5))
def test_journal_json_with_hostile_numbers_never_raises(
    entries: list[dict[str, object]], boots: list[dict[str, object]]
) -> None:
    """Numeric fields arrive as strings: `--5`, `+-1`, `٣` and friends are skipped, not a
    ValueError out of `int()`; every entry with a MESSAGE is kept."""
    got = p.parse_journal_json("\n".join(json.dumps(e) for e in entries))
    readable = [e for e in entries if p._field_text(e["MESSAGE"]) is not None]
    assert len(got) == len(readable)
    p.parse_boots(json.dumps(boots))
    for obj in boots:
        p.parse_boots(
            f" {obj['index']} {'a' * 32} Mon 2026-01-01 00:00:00 UTC—Mon 2026-01-01 01:00:00 UTC"
        )


@settings(max_examples=200, deadline=None)
@given(text=texts)
def test_no_parser_raises_on_arbitrary_text(text: str) -> None:
    for parser in PARSERS:
        parser(text)
    for line in p.parse_log(text):
        marker = p.match_marker(line)
        if marker is not None:
            p.xid_is_node_fatal(marker)
            p.xid_is_critical(marker)


def test_pstore_identity_across_sysfs_and_archive() -> None:
    text = (
        "==> /sys/fs/pstore/dmesg-efi-173626209001001 <==\nPanic#1 Part1\n\n"
        "==> /var/lib/systemd/pstore/173626209001001/dmesg-efi-173626209001001 <==\n"
        "Panic#1 Part1\n\n"
        "==> /var/lib/systemd/pstore/173626209001001/dmesg.txt <==\nx\n\n"
        "==> /var/lib/systemd/pstore/173626209101001/dmesg.txt <==\ny\n"
    )
    keys = [r.key for r in p.parse_pstore(text)]
    assert keys[0] == keys[1] == "dmesg-efi-173626209001001"  # systemd-pstore moved it
    assert keys[2] != keys[3]  # two reassembled records stay two


def test_outputs_cut_by_the_runner_still_parse() -> None:
    """The node runner marks a cut with a line before (keep=tail) or after (keep=head)."""
    marker = "[... agentctl: output cut, 3 lines and 0 bytes dropped from the start ...]\n"
    rows = [
        {"index": i, "boot_id": f"{i + 50:032x}", "first_entry": 1, "last_entry": 2}
        for i in (-1, 0)
    ]
    assert [b.index for b in p.parse_boots(marker + json.dumps(rows)[30:])] == [0]
    doc = json.dumps({"Devices": [{"Name": "System Firmware", "Plugin": "uefi_capsule"}]})
    (fw,) = p.parse_fwupd_history(doc + "\n" + marker.replace("start", "end"))
    assert fw.needs_reboot
    assert p.parse_log(marker) and not p.scan_markers(p.parse_log(marker))
