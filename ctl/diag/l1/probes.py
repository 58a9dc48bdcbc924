"""The read-only probes of `agentctl diag l1`: each a few seconds at most, all run in parallel.

Files are read as `path` probes (no tool needed); commands run with a timeout of at most 5 s,
because nvidia-smi and df are exactly the tools that hang on a sick node (Xid 79, a dead NFS
server). Probes that need an absent tool come back `missing_tool`, and the checks skip.
"""

from __future__ import annotations

import shlex

from agentctl.collectors.gpu.smi import SMI_FIELDS, smi_command
from agentctl.ctl.diag.l1.context import L1Context, ServingExpect
from agentctl.ctl.diag.l1.thresholds import L1Thresholds
from agentctl.ctl.diag.probe import ProbeSpec
from agentctl.ctl.facts import pci

TIMEOUT = 5.0
#: The CSV query: the GPU sampler's fields plus what only L1 needs (both accepted since R418).
L1_SMI_FIELDS: tuple[str, ...] = (*SMI_FIELDS, "persistence_mode", "driver_version")
#: -q sections the CSV cannot give: remapped rows, retired pages, slowdown temperatures.
SMI_Q_SECTIONS = "TEMPERATURE,ECC,PAGE_RETIREMENT,ROW_REMAPPER"
_DF_EXCLUDE = ("-x", "tmpfs", "-x", "devtmpfs", "-x", "squashfs", "-x", "overlay")
XID_MAX_LINES = 500

# One line per interface; `device=1` marks hardware (virtual interfaces have no device link).
NET_LINKS = """\
for d in /sys/class/net/*; do
  [ -e "$d" ] || continue
  if [ -e "$d/device" ]; then dev=1; else dev=0; fi
  echo "name=${d##*/} operstate=$(cat "$d/operstate" 2>/dev/null)" \
    "carrier=$(cat "$d/carrier" 2>/dev/null) flags=$(cat "$d/flags" 2>/dev/null)" \
    "type=$(cat "$d/type" 2>/dev/null) device=$dev"
done
exit 0
"""

_XID_GREP = "grep -E 'NVRM: (Xid|GPU [0-9a-fA-F:.]+: GPU has fallen off the bus)'"


def xid_script(window_hours: float) -> str:
    """Kernel log lines with Xids from the window: journald when it holds kernel messages,
    else the dmesg ring buffer plus the uptime that dates its `[seconds]` stamps. Without
    access to either (dmesg_restrict, no become) it says `@@unreadable`, so "no Xid" is never
    claimed from a log that could not be read."""
    minutes = max(1, round(window_hours * 60))
    return f"""\
if command -v journalctl >/dev/null 2>&1 && \
   [ -n "$(journalctl -k -n 1 -q --no-pager 2>/dev/null)" ]; then
  echo '@@source journal'
  journalctl -k --since=-{minutes}min -o short-iso --no-pager -q 2>/dev/null \
    | {_XID_GREP} | tail -n {XID_MAX_LINES}
else
  echo '@@source dmesg'
  echo "@@uptime $(cut -d ' ' -f 1 /proc/uptime 2>/dev/null)"
  out=$(dmesg 2>/dev/null) || echo '@@unreadable dmesg'
  printf '%s\n' "$out" | {_XID_GREP} | tail -n {XID_MAX_LINES}
fi
exit 0
"""


def services_script(serving: ServingExpect) -> str:
    """Per expected service: its systemd unit's state, else the supervisor's pid file
    (ctl/playbook/ops/service.py writes `agentctl-NAME.service` or `STATE/NAME.pid`)."""
    state = shlex.quote(f"{serving.install_root}/state")
    names = " ".join(shlex.quote(n) for n in serving.services())
    return f"""\
S={state}
for n in {names}; do
  u="agentctl-$n.service"
  if [ -d /run/systemd/system ] && \
     [ "$(systemctl show -p LoadState --value "$u" 2>/dev/null)" = loaded ]; then
    echo "service=$n manager=systemd state=$(systemctl is-active "$u" 2>/dev/null)"
  elif [ -r "$S/$n.pid" ]; then
    p=$(cat "$S/$n.pid" 2>/dev/null)
    if [ -n "$p" ] && [ -r "/proc/$p/cmdline" ] && \
       tr '\\000' ' ' < "/proc/$p/cmdline" | grep -q 'agentctl[.]serving'; then
      echo "service=$n manager=supervisor state=running pid=$p"
    else
      echo "service=$n manager=supervisor state=dead pid=$p"
    fi
  else
    echo "service=$n manager=none state=absent"
  fi
done
exit 0
"""


# Runs on the node with its own Python: one JSON line per URL, no proxy, 2 s per request.
_HEALTH_PY = """\
import concurrent.futures as cf, json, sys, urllib.error, urllib.request
op = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def get(u):
    try:
        with op.open(u, timeout=2) as r:
            return u, r.status, r.read(400).decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return u, e.code, e.read(400).decode("utf-8", "replace")
    except Exception as e:
        return u, 0, type(e).__name__ + ": " + str(e)[:200]
with cf.ThreadPoolExecutor(8) as ex:
    for u, c, b in ex.map(get, sys.argv[1:]):
        print(json.dumps({"url": u, "code": c, "body": b}))
"""


def health_script(serving: ServingExpect) -> str:
    """GET every `/health` from the node (the deployed venv's Python, else python3)."""
    py = shlex.quote(f"{serving.install_root}/venv/bin/python")
    urls = " ".join(shlex.quote(url) for _, url in serving.endpoints())
    return f'P={py}; [ -x "$P" ] || P=python3\n"$P" -c {shlex.quote(_HEALTH_PY)} {urls}\n'


def system_probes() -> list[ProbeSpec]:
    return [
        ProbeSpec("df", argv=("df", "-P", "-B1", "-T", *_DF_EXCLUDE), timeout=TIMEOUT, keep="head"),
        ProbeSpec("df_inodes", argv=("df", "-P", "-i", *_DF_EXCLUDE), timeout=TIMEOUT, keep="head"),
        ProbeSpec("mounts", path="/proc/mounts", timeout=TIMEOUT, keep="head"),
        ProbeSpec("meminfo", path="/proc/meminfo", timeout=TIMEOUT),
        ProbeSpec("loadavg", path="/proc/loadavg", timeout=TIMEOUT),
        ProbeSpec("cpus_online", path="/sys/devices/system/cpu/online", timeout=TIMEOUT),
        ProbeSpec("net_dev", path="/proc/net/dev", timeout=TIMEOUT, keep="head"),
        ProbeSpec("net_links", shell=NET_LINKS, timeout=TIMEOUT, keep="head"),
        ProbeSpec("timedatectl", argv=("timedatectl", "show"), timeout=TIMEOUT),
        ProbeSpec("chrony", argv=("chronyc", "-n", "tracking"), timeout=TIMEOUT),
        ProbeSpec("tainted", path="/proc/sys/kernel/tainted", timeout=TIMEOUT),
    ]


def gpu_probes(window_hours: float) -> list[ProbeSpec]:
    """Always run, even where the inventory expects no GPU: a stray or missing GPU is news,
    and on a CPU node each of these ends at once (file absent, tool missing)."""
    return [
        ProbeSpec("nvidia_version", path="/proc/driver/nvidia/version", timeout=TIMEOUT),
        ProbeSpec("modules", path="/proc/modules", timeout=TIMEOUT),
        ProbeSpec("pci_nvidia", shell=pci.SCRIPT, timeout=TIMEOUT, keep="head"),
        ProbeSpec(
            "nvidia_smi", argv=tuple(smi_command(L1_SMI_FIELDS)), timeout=TIMEOUT, keep="head"
        ),
        ProbeSpec(
            "nvidia_smi_q",
            argv=("nvidia-smi", "-q", "-d", SMI_Q_SECTIONS),
            timeout=TIMEOUT,
            keep="head",
        ),
        ProbeSpec(
            "xid_log",
            shell=xid_script(window_hours),
            timeout=TIMEOUT,
            root=True,  # journald's kernel messages and dmesg (dmesg_restrict) want root
            max_lines=XID_MAX_LINES + 10,
        ),
        ProbeSpec(
            "fabricmanager", argv=("systemctl", "is-active", "nvidia-fabricmanager"), timeout=3.0
        ),
    ]


def serving_probes(serving: ServingExpect) -> list[ProbeSpec]:
    return [
        ProbeSpec("serving_services", shell=services_script(serving), timeout=TIMEOUT),
        # The bracket keeps pgrep from matching the `sh -c` that runs it.
        ProbeSpec("serving_pgrep", argv=("pgrep", "-af", "agentctl[.]serving"), timeout=TIMEOUT),
        ProbeSpec("serving_health", shell=health_script(serving), timeout=TIMEOUT),
    ]


def l1_probes(ctx: L1Context, thresholds: L1Thresholds | None = None) -> list[ProbeSpec]:
    """All L1 probes for one host; serving probes only where the inventory deploys serving;
    a replayed GPU's probes read its recordings (ctl/diag/l1/replay.py)."""
    t = thresholds or L1Thresholds()
    if ctx.gpu_replay is not None:
        from agentctl.ctl.diag.l1.replay import replay_probes

        gpu = replay_probes(ctx.gpu_replay.set_name, ctx.gpu_replay.python, L1_SMI_FIELDS,
                            SMI_Q_SECTIONS, _XID_GREP, XID_MAX_LINES + 10)  # fmt: skip
    else:
        gpu = gpu_probes(t.xid_window_hours)
    probes = [*system_probes(), *gpu]
    if ctx.serving is not None:
        probes += serving_probes(ctx.serving)
    return probes
