"""`python -m agentctl.ctl` runs the CLI (used by the benchmark and tests)."""

from agentctl.ctl.cli import run

run()
