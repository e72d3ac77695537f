"""The seed's ``uv run python src/worker.py``: one aiq worker, the same as ``aiq worker``.

Configured by the seed's environment variables (``WORKER_TYPE``, ``MODEL_FRAMEWORK``,
``USE_GPU``, ``REDIS_HOST``, ``MAX_CONCURRENT_JOBS``) and the rest of docs/WORKER_MANAGEMENT.md.
A type whose framework lives in its own environment (``aiq env install <type>``) runs there;
arguments are ``aiq worker``'s (``--type``, ``--concurrency``).
"""

from __future__ import annotations

import sys

from aiq.cli import app

if __name__ == "__main__":
    app(args=["worker", *sys.argv[1:]], prog_name="aiq")
