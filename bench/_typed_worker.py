"""The worker of ``bench.cluster_bench``: ``python -m bench._typed_worker NAME`` adds NAME to the
catalogue of this process as a worker type of the ``diagnostic`` framework (model type
``noop``), then runs exactly as ``python -m consumers`` does (``WORKER_TYPE=NAME``,
``MODEL_FRAMEWORK=diagnostic`` and the rest from the environment).

Why simulated types: the catalogue's real types hash to two of a 3-master cluster's three slot
ranges (``{diagnostic}`` and ``{sklearn}`` to the same one), and a worker serves only its own
type, so no-op jobs over real types cannot spread load over every master. A type name is only a
hash tag to Redis; the worker's code path is that of the diagnostic type.
"""

from __future__ import annotations

import sys

from schemas.catalogue import CATALOGUE, Device, WorkerType


def register(names: list[str]) -> None:
    """Add ``names`` to this process's catalogue (no-op jobs of the diagnostic framework)."""
    for name in names:
        CATALOGUE.setdefault(name, WorkerType(name, "diagnostic", "aiq", ">=0", Device.CPU, None,
                                              frozenset({"noop"})))


def main() -> int:
    register(sys.argv[1:])
    from consumers.__main__ import main as worker_main

    return worker_main()


if __name__ == "__main__":
    sys.exit(main())
