"""`nics` facts: every interface under /sys/class/net with link state, driver and addresses.

The snippet prints one `iface key=value ...` line per interface (sysfs needs no tools), then
`ip -o addr` when iproute2 is there; without it `addresses` is None (unknown), not [] (none).
"""

from __future__ import annotations

from typing import Any

from agentctl.ctl.facts._common import sections, to_int
from agentctl.ctl.facts.base import FactFamily

# `cd -P ... && pwd -P` resolves the driver symlink with POSIX sh alone (no readlink).
SCRIPT = """\
for d in /sys/class/net/*; do
  [ -e "$d" ] || continue
  drv=$(cd -P "$d/device/driver" 2>/dev/null && pwd -P)
  echo "iface name=${d##*/} mac=$(cat "$d/address" 2>/dev/null)" \
    "mtu=$(cat "$d/mtu" 2>/dev/null) operstate=$(cat "$d/operstate" 2>/dev/null)" \
    "speed=$(cat "$d/speed" 2>/dev/null) driver=${drv##*/}"
done
if command -v ip >/dev/null 2>&1; then
  echo '@@ip'
  ip -o addr show 2>/dev/null
fi
"""

#: SPEED_UNKNOWN is -1; some older drivers report it as an unsigned 16/32-bit value.
_UNKNOWN_SPEEDS = frozenset({65535, 4294967295})


def _speed(text: str | None) -> int | None:
    value = to_int(text)
    if value is None or value <= 0 or value in _UNKNOWN_SPEEDS:
        return None
    return value


def _iface(line: str) -> dict[str, Any]:
    kv: dict[str, str] = {}
    for token in line.split()[1:]:
        key, _, value = token.partition("=")
        kv[key] = value
    return {
        "name": kv.get("name", ""),
        "mac": kv.get("mac") or None,
        "mtu": to_int(kv.get("mtu")),
        "operstate": kv.get("operstate") or None,
        "speed_mbps": _speed(kv.get("speed")),
        "driver": kv.get("driver") or None,
        "addresses": None,
    }


def _address(line: str) -> tuple[str, dict[str, Any]] | None:
    """`4: eth0    inet 192.0.2.2/24 brd ... scope global eth0\\ ...` -> (ifname, address)."""
    fields = line.split()
    if len(fields) < 4 or fields[2] not in ("inet", "inet6"):
        return None
    address, _, prefix = fields[3].partition("/")
    scope = fields[fields.index("scope") + 1] if "scope" in fields[:-1] else None
    entry = {"family": fields[2], "address": address, "prefixlen": to_int(prefix), "scope": scope}
    return fields[1].split("@")[0], entry


def parse(raw: str) -> dict[str, Any]:
    sec = sections(raw)
    ifaces = [_iface(line) for line in sec.get("", []) if line.startswith("iface ")]
    by_name = {i["name"]: i for i in ifaces}
    if "ip" in sec:
        for iface in ifaces:
            iface["addresses"] = []
        for line in sec["ip"]:
            parsed = _address(line)
            if parsed and parsed[0] in by_name:
                by_name[parsed[0]]["addresses"].append(parsed[1])
    return {"interfaces": ifaces, "ip_available": "ip" in sec}


FAMILY = FactFamily(
    name="nics",
    script=SCRIPT,
    parse=parse,
    doc="network interfaces: MAC, MTU, state, speed, driver, IP addresses",
)
