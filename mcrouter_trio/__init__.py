"""mcrouter-trio: a memcached protocol router with mcrouter's semantics, on Trio."""

__version__ = "0.1.0"
