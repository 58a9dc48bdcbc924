"""Host metrics of a node (CPU, memory, load, disk), read over SSH with the other telemetry."""
