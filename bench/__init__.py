"""Benchmarks of the queue itself: ``uv run python -m bench.queue_bench`` (see bench/README.md)."""
