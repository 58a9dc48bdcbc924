"""GPU collection: NVML (agent side), nvidia-smi (agentless) and Xid lines from the kernel log.

Every reading says whether it is a value or why there is none, so "not supported on this GPU"
never reads as 0 and a failed call never reads as "not supported".
"""
