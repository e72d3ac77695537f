"""The ceiling of short ``redis_io`` jobs in one process: the jobs' code alone, with no queue.

    python -m bench._bare_threads REDIS_URL THREADS ROUND_TRIPS [CPUS]

THREADS threads, each with its own sync client as a ``redis_io`` job thread has, make
ROUND_TRIPS blocking PINGs between them (an equal share each) and nothing else, under the
scheduling policy a worker's job threads get by default (``JOB_THREAD_POLICY``,
consumers/threads.py: SCHED_BATCH, where the same PINGs cost ~17 % less CPU than under the
normal policy; bench/RESULTS.md, 2026-12-08). Prints one JSON line: {"rate": PINGs per second,
"cpu_us": this process's CPU per PING, "policy": the threads' policy}. bench.queue_bench
--sweep runs it in its own process beside the worker's drain: a worker process with THREADS job
threads cannot run these jobs faster, however little its queue work costs. CPUS (a list as
WORKER_CPUS takes it) confines the process to those CPUs first, as that setting does a worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import sys
import threading
import time

import redis

from consumers.affinity import parse_cpus, pin
from consumers.settings import WorkerSettings
from consumers.threads import set_policy


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bare(url: str, threads: int, round_trips: int) -> dict[str, float | str]:
    shares = [round_trips // threads + (i < round_trips % threads) for i in range(threads)]
    clients = [redis.Redis.from_url(url) for _ in range(threads)]
    for client in clients:
        client.ping()  # connected before the clock starts, as a job thread's client is
    go = threading.Event()
    seen: set[str] = set()  # the policies the threads ran under, as each saw its own

    def run(client: redis.Redis, share: int) -> None:
        go.wait()
        for _ in range(share):
            client.ping()
        if hasattr(os, "sched_getscheduler"):
            seen.add("batch" if os.sched_getscheduler(0) == os.SCHED_BATCH else "normal")

    workers = [threading.Thread(target=run, args=pair)
               for pair in zip(clients, shares, strict=True)]
    for worker in workers:
        worker.start()
    with contextlib.suppress(OSError, AttributeError):  # refused: so it is for job threads
        set_policy(workers, WorkerSettings.model_fields["job_thread_policy"].default)
    cpu0, t0 = _cpu_s(), time.perf_counter()
    go.set()
    for worker in workers:
        worker.join()
    wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    return {"rate": round_trips / wall, "cpu_us": cpu / round_trips * 1e6,
            "policy": "/".join(sorted(seen)) or "normal"}


if __name__ == "__main__":
    url, threads, round_trips = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if len(sys.argv) > 4:
        pin(parse_cpus(sys.argv[4]))
    print(json.dumps(bare(url, threads, round_trips)))
