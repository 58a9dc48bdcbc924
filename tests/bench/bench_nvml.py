"""CPU cost of NVML sampling (standalone: `python tests/bench/bench_nvml.py [--seconds S]`).

Samples at 1 Hz for S seconds (default 30) through `NvmlSource` and reports process CPU time
(user + system) per sample and per GPU, and the CPU share at 1 Hz. On a machine without a GPU
it measures the same code over the recorded H100 replay and says so: that figure is the
Python overhead only, not the driver's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from agentctl.collectors.gpu.nvml import NvmlSource, NvmlSourceError
from agentctl.collectors.gpu.replay import ReplayNvml

REPLAY = Path(__file__).resolve().parents[1] / "fixtures/gpu/nvml_h100x2_565.57.01.json"


def _source() -> tuple[NvmlSource, str]:
    real = NvmlSource()
    try:
        real.sample()
        return real, "real NVML"
    except NvmlSourceError as e:
        return NvmlSource(ReplayNvml.from_file(REPLAY)), f"replay of {REPLAY.name} ({e.kind})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--hz", type=float, default=1.0)
    args = ap.parse_args()
    source, label = _source()
    gpus = len(source.sample().gpus)
    n, cpu, wall = 0, 0.0, 0.0
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        t0, c0 = time.perf_counter(), time.process_time()
        source.sample()
        c1 = time.process_time()
        wall += time.perf_counter() - t0
        cpu += c1 - c0
        n += 1
        time.sleep(max(0.0, 1.0 / args.hz - (time.perf_counter() - t0)))
    per = cpu / max(n, 1)
    print(f"source: {label}; {gpus} GPU(s); {n} samples at {args.hz:g} Hz")
    print(f"cpu per sample: {per * 1e3:.2f} ms ({per * 1e3 / max(gpus, 1):.2f} ms per GPU); "
          f"wall per sample: {wall / max(n, 1) * 1e3:.2f} ms")  # fmt: skip
    print(f"cpu share at {args.hz:g} Hz: {per * args.hz * 100:.3f}% of one core")


if __name__ == "__main__":
    main()
