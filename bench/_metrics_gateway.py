"""The gateway of ``bench.metrics_cost``: ``python -m bench._metrics_gateway N`` adds N simulated
worker types to the catalogue of this process (the benchmark writes their keys directly), then
serves exactly as ``python -m gateway`` does (settings from the environment)."""

from __future__ import annotations

import sys

from schemas.catalogue import CATALOGUE, Device, WorkerType


def simulated(n: int) -> list[str]:
    return [f"bench-{i:03d}" for i in range(n)]


def main() -> int:
    for name in simulated(int(sys.argv[1])):
        CATALOGUE[name] = WorkerType(name, "diagnostic", "aiq", ">=0", Device.CPU, None,
                                     frozenset({"noop"}))
    from gateway.__main__ import main as gateway_main

    return gateway_main()


if __name__ == "__main__":
    sys.exit(main())
