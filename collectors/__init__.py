"""Telemetry sources and the store (the only package that speaks SQL)."""
