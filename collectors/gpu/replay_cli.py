"""`python -m agentctl.collectors.gpu replay ...`: a node presents a replayed GPU (see
`recorded.py`) where the real tools would answer. Over SSH the collector and L1 run these
instead of nvidia-smi and the kernel log reader when the inventory says `agentctl_gpu_replay`.

    replay sample SET [--phase idle|load] [--frame K]  one GPU sample, JSON, source replay:SET
    replay smi-q SET [--phase P]                       the recorded `nvidia-smi -q`
    replay smi-csv SET --fields F,G [--phase P]        as `--query-gpu=F,G` csv,noheader,nounits
    replay kernel-log SET                              the recorded kernel log lines (may be none)

Exit codes: 0 done, 2 usage, 4 the set or the recording lacks what was asked.
"""

from __future__ import annotations

import argparse
import json
import sys

from agentctl.collectors.gpu import recorded

NOT_IN_RECORDING = 4


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m agentctl.collectors.gpu replay")
    sub = ap.add_subparsers(dest="what", required=True)
    for name in ("sample", "smi-q", "smi-csv", "kernel-log"):
        p = sub.add_parser(name)
        p.add_argument("set", help=f"one of {', '.join(sorted(recorded.REPLAY_SETS))}")
        if name != "kernel-log":
            p.add_argument("--phase", choices=recorded.PHASES, default="idle")
        if name == "sample":
            p.add_argument("--frame", type=int, default=0)
        if name == "smi-csv":
            p.add_argument("--fields", required=True)
    return ap


def main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage
        return 2 if exc.code else 0
    try:
        s = recorded.replay_set(args.set)
        if args.what == "sample":
            print(json.dumps(recorded.frame_json(s, args.phase, max(args.frame, 0))))
        elif args.what == "smi-q":
            sys.stdout.write(recorded.smi_q(s, args.phase))
        elif args.what == "smi-csv":
            fields = [f for f in args.fields.split(",") if f]
            sys.stdout.write(recorded.smi_csv(s, fields, args.phase))
        else:
            sys.stdout.write(recorded.kernel_log(s))
    except recorded.ReplayError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return NOT_IN_RECORDING
    return 0
