"""`disks` facts: mounted filesystems with space, inodes and read-only state; block devices.

Pseudo filesystems are kept and flagged rather than dropped, so a full /dev/shm or an overlay
root stays visible; consumers filter on `pseudo`.
"""

from __future__ import annotations

import re
from typing import Any

from agentctl.ctl.facts._common import TIMEOUT_PREFIX, sections, to_int
from agentctl.ctl.facts.base import FactFamily

# df stats every mount, so a dead NFS server hangs it: hence the timeout. /proc/mounts is cut
# to mountpoint and options, as container hosts list hundreds of mounts.
SCRIPT = f"""\
{TIMEOUT_PREFIX}
echo '@@df'
$T df -P -B1 -T 2>/dev/null
echo '@@dfi'
$T df -P -i 2>/dev/null
echo '@@mounts'
cut -d ' ' -f 2,4 /proc/mounts 2>/dev/null
if command -v lsblk >/dev/null 2>&1; then
  echo '@@lsblk'
  lsblk -b -d -n -o NAME,SIZE,ROTA,TYPE,MODEL 2>/dev/null
fi
"""

PSEUDO_FSTYPES = frozenset({"tmpfs", "devtmpfs", "proc", "sysfs", "overlay", "squashfs"})

_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(path: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as \\ooo octal escapes."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), path)


def _read_only(lines: list[str]) -> dict[str, bool]:
    """mountpoint -> ro; a later line is a mount stacked on top, so it wins."""
    out: dict[str, bool] = {}
    for line in lines:
        fields = line.split()
        if len(fields) == 2:
            out[_unescape(fields[0])] = "ro" in fields[1].split(",")
    return out


def _inodes(lines: list[str]) -> dict[str, tuple[int | None, int | None, int | None]]:
    out: dict[str, tuple[int | None, int | None, int | None]] = {}
    for line in lines[1:]:  # header
        fields = line.split(None, 5)
        if len(fields) == 6:
            out[fields[5]] = (to_int(fields[1]), to_int(fields[2]), to_int(fields[3]))
    return out


def _block_devices(lines: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for line in lines:
        fields = line.split(None, 4)
        if len(fields) < 4:
            continue
        out.append(
            {
                "name": fields[0],
                "size_bytes": to_int(fields[1]),
                "rotational": fields[2] == "1" if fields[2] in ("0", "1") else None,
                "type": fields[3],
                "model": fields[4].strip() if len(fields) > 4 else None,
            }
        )
    return out


def parse(raw: str) -> dict[str, Any]:
    sec = sections(raw)
    ro = _read_only(sec.get("mounts", []))
    inodes = _inodes(sec.get("dfi", []))
    filesystems: list[dict[str, Any]] = []
    for line in sec.get("df", [])[1:]:  # header
        fields = line.split(None, 6)
        if len(fields) != 7:
            continue
        device, fstype, size, used, avail, _pct, mountpoint = fields
        itotal, iused, ifree = inodes.get(mountpoint, (None, None, None))
        filesystems.append(
            {
                "device": device,
                "fstype": fstype,
                "mountpoint": mountpoint,
                "size_bytes": to_int(size),
                "used_bytes": to_int(used),
                "avail_bytes": to_int(avail),
                "inodes_total": itotal,
                "inodes_used": iused,
                "inodes_free": ifree,
                "pseudo": fstype in PSEUDO_FSTYPES,
                "read_only": ro.get(mountpoint),
            }
        )
    return {
        "filesystems": filesystems,
        "block_devices": _block_devices(sec.get("lsblk", [])),
        "lsblk_available": "lsblk" in sec,
    }


FAMILY = FactFamily(
    name="disks",
    script=SCRIPT,
    parse=parse,
    doc="filesystems (type, space, inodes, read-only, pseudo) and block devices (lsblk)",
)
