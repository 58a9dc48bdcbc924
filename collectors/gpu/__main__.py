"""Node-side GPU sampling: `python -m agentctl.collectors.gpu sample` prints one NVML sample as
JSON for the collector to read over SSH; `record FILE` writes a replay fixture of the calls.

`sample --replay FILE` samples a recorded replay fixture instead of the GPU (tests on machines
without one); `replay ...` presents a shipped recording instead (`replay_cli.py`: demos, labelled
`replay:<set>` wherever it is shown).

This is the NVML path of `agentctl collect` (inventory `agentctl_gpu_query: nvml`) on nodes
where the serving venv is installed; elsewhere the collector parses `nvidia-smi` instead.
Exit codes: 0 sampled, 3 NVML could not start (no driver, no GPU), 2 usage.
"""

from __future__ import annotations

import importlib
import json
import sys

from agentctl.collectors.gpu.nvml import NvmlSource, NvmlSourceError


def main(argv: list[str]) -> int:
    if argv and argv[0] == "replay":
        from agentctl.collectors.gpu.replay_cli import main as replay_main

        return replay_main(argv[1:])
    if not argv or argv[0] not in ("sample", "record"):
        print("usage: python -m agentctl.collectors.gpu sample | record FILE | replay ...",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        if argv[0] == "sample":
            if len(argv) == 3 and argv[1] == "--replay":
                from agentctl.collectors.gpu.replay import ReplayNvml

                source = NvmlSource(ReplayNvml.from_file(argv[2]))
            elif len(argv) != 1:
                print("usage: python -m agentctl.collectors.gpu sample [--replay FILE]",
                      file=sys.stderr)  # fmt: skip
                return 2
            else:
                source = NvmlSource()
            print(json.dumps(source.sample().to_json()))
            return 0
        if len(argv) != 2:
            print("usage: python -m agentctl.collectors.gpu record FILE", file=sys.stderr)
            return 2
        from agentctl.collectors.gpu.replay import record

        with open(argv[1], "w") as fh:
            json.dump(record(importlib.import_module("pynvml")), fh, indent=1)
        return 0
    except NvmlSourceError as e:
        print(json.dumps({"error": e.kind, "detail": e.detail}))
        return 3


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
