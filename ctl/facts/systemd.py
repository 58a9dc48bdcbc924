"""`systemd` facts: what runs as PID 1, systemd's version and overall system state.

`is-system-running` is asked only when systemd is the running init (/run/systemd/system, as
sd_booted() checks); elsewhere it would just print "offline" about an installed but idle systemd.
"""

from __future__ import annotations

import re
from typing import Any

from agentctl.ctl.facts._common import TIMEOUT_PREFIX, key_values, to_int
from agentctl.ctl.facts.base import FactFamily

SCRIPT = f"""\
{TIMEOUT_PREFIX}
echo "pid1=$(cat /proc/1/comm 2>/dev/null)"
if [ -d /run/systemd/system ]; then echo booted=1; else echo booted=0; fi
if command -v systemctl >/dev/null 2>&1; then
  echo "version=$(systemctl --version 2>/dev/null | head -n 1)"
  [ -d /run/systemd/system ] && echo "state=$($T systemctl is-system-running 2>/dev/null)"
fi
exit 0
"""

_VERSION = re.compile(r"^systemd (\d+)(?: \((\S+)\))?")


def parse(raw: str) -> dict[str, Any]:
    kv = key_values(raw.splitlines())
    pid1 = kv.get("pid1") or None
    match = _VERSION.match(kv.get("version", ""))
    return {
        "pid1": pid1,
        "systemd_is_pid1": pid1 == "systemd",
        "booted_with_systemd": kv.get("booted") == "1",
        "version": to_int(match.group(1)) if match else None,
        "version_full": match.group(2) if match else None,
        "system_state": kv.get("state") or None,
    }


FAMILY = FactFamily(
    name="systemd",
    script=SCRIPT,
    parse=parse,
    doc="PID 1, systemd version, system state (running/degraded/...)",
)
