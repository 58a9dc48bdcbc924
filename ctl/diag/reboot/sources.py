"""The read-only probes `agentctl diag reboot-cause` runs on a node (or finds in an L2 bundle).

Choices worth knowing:

- ``boots`` asks for ``-o json`` (first/last entry in µs since the epoch, no zone to guess).
  Some systemd versions ignore ``-o`` for ``--list-boots`` and print the table; the parser
  reads both, and ``TZ=UTC`` makes the table's times unambiguous too.
- Journal probes run as root: without it journalctl shows only the user's own journal.
  A volatile journal answers ``-b -1`` with "no persistent journal was found" (exit 1):
  the analysis lists that as a missing source, it is never read as the current boot.
- ``cur_boot_head`` and ``cur_journald`` read the *start* of the current boot (``| head``):
  journald's "uncleanly shut down" and fs recovery lines are logged early, while ``-n``
  would give the end.
- ``last`` runs under ``TZ=UTC`` because ``last -F`` prints local time without a zone; on
  Debian 13 the same output comes from wtmpdb.
- pstore, kdump and watchdog are read from the filesystem only. ``/dev/watchdog`` is never
  opened (opening it can arm the timer); the sysfs ``bootstatus`` says how this boot began.
- EFI variables (``CapsuleLast``) are not read: they persist on most UEFI systems and prove
  nothing about this reboot; firmware updates come from fwupd's history instead.
"""

from __future__ import annotations

from agentctl.ctl.diag.probe import ProbeSpec

_PREV = ("journalctl", "-b", "-1", "--no-pager")

REBOOT_PROBES: tuple[ProbeSpec, ...] = (
    ProbeSpec(
        "boots",
        argv=(
            "env",
            "TZ=UTC",
            "LC_ALL=C",
            "journalctl",
            "--list-boots",
            "-o",
            "json",
            "--no-pager",
        ),
        root=True,
        max_bytes=256 * 1024,
    ),
    ProbeSpec("boot_id", path="/proc/sys/kernel/random/boot_id", keep="head"),
    ProbeSpec("uptime", path="/proc/uptime", keep="head"),
    ProbeSpec("date", argv=("date", "-u", "+%s"), keep="head", timeout=5.0),
    ProbeSpec(
        "prev_journal_tail",
        argv=(*_PREV, "-n", "300", "-o", "short-iso"),
        root=True,
        max_lines=300,
    ),
    ProbeSpec(
        "prev_kernel",
        argv=(*_PREV, "-k", "-n", "5000", "-o", "short-iso"),
        root=True,
        max_lines=5000,
        max_bytes=1024 * 1024,
    ),
    ProbeSpec(
        "prev_logind",
        argv=(
            *_PREV,
            "-n",
            "100",
            "-o",
            "json",
            "MESSAGE_ID=98268866d1d54a499c4e98921d93bc40",
            "+",
            "_SYSTEMD_UNIT=systemd-logind.service",
        ),
        root=True,
    ),
    ProbeSpec(
        "cur_boot_head",
        shell="journalctl -b 0 -o short-iso --no-pager | head -n 3000",
        root=True,
        keep="head",
        max_lines=3000,
    ),
    ProbeSpec(
        "cur_journald",
        shell="journalctl -b 0 -t systemd-journald -o short-iso --no-pager | head -n 100",
        root=True,
        keep="head",
        max_lines=100,
    ),
    ProbeSpec(
        "last",
        shell=(
            "export TZ=UTC LC_ALL=C; "
            "if command -v last >/dev/null 2>&1; then last -n 20 -Fx reboot shutdown; "
            "elif command -v wtmpdb >/dev/null 2>&1; then wtmpdb last -n 20 -F -x; "
            "else exit 127; fi"
        ),
        keep="head",
        max_lines=200,
    ),
    ProbeSpec("pstore", glob="/sys/fs/pstore/*", root=True),
    ProbeSpec("pstore_ls", listing="/sys/fs/pstore", root=True, keep="head"),
    ProbeSpec("pstore_archive", glob="/var/lib/systemd/pstore/*/*", root=True),
    ProbeSpec("pstore_archive_ls", listing="/var/lib/systemd/pstore", root=True, keep="head"),
    ProbeSpec("kdump_ls", listing="/var/crash", root=True),
    ProbeSpec("kdump_dmesg", glob="/var/crash/*/*dmesg*", root=True, max_files=8),
    ProbeSpec("watchdog_bootstatus", glob="/sys/class/watchdog/watchdog*/bootstatus", keep="head"),
    ProbeSpec("watchdog_state", glob="/sys/class/watchdog/watchdog*/state", keep="head"),
    ProbeSpec("watchdog_identity", glob="/sys/class/watchdog/watchdog*/identity", keep="head"),
    ProbeSpec("ipmi_sel", argv=("ipmitool", "sel", "elist", "last", "200"), root=True),
    ProbeSpec("ipmi_sel_time", argv=("ipmitool", "sel", "time", "get"), root=True, keep="head"),
    ProbeSpec("ras", argv=("ras-mc-ctl", "--errors"), root=True),
    ProbeSpec(
        "fwupd_history",
        argv=("fwupdmgr", "get-history", "--json"),
        keep="head",
        not_supported_codes=(2,),  # fwupdmgr's "nothing to do": no history at all
    ),
)
"""Every probe the analysis reads, by stable name (also the file name in a bundle)."""

PROBE_NAMES: tuple[str, ...] = tuple(p.name for p in REBOOT_PROBES)
