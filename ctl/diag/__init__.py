"""Diagnostics: L1 health posture, L2 evidence bundles, reboot-cause reports.

Everything a probe does on a node is read-only. Pure parsers and classifiers (`l1.checks`,
`reboot.*`) take `ProbeResult`s, so they run the same on a live host and on a bundle.
"""
