"""The Redis layer: key names, Lua state transitions, producer and consumer-group operations.

Knows nothing of HTTP or of ML frameworks.
"""
