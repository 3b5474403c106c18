"""Latency and capacity benchmark of the proxy, next to a no-relay floor and a naive relay (``python -m bench``)."""
