"""Baselines the proxy is measured against (run as separate processes, measured the same way)."""
