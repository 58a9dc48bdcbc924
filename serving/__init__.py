"""Bundled serving stack: KV-aware router and engine workers. Imports nothing else of ours."""
