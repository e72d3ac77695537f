"""The consumer of the raw latency loop, run as its own process by bench.queue_bench:

    python -m bench._echo REDIS_URL STREAM REPLY_STREAM GROUP

Blocked on XREADGROUP; for each entry: XACK it and XADD a ``done`` entry to the reply stream
(both in one pipelined round trip). Announces itself with a ``ready`` entry on the reply stream.
Runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import sys

from redis.asyncio import Redis


async def echo(url: str, stream: str, reply: str, group: str) -> None:
    redis = Redis.from_url(url, decode_responses=True)
    await redis.xadd(reply, {"type": "ready"})
    while True:
        got = await redis.xreadgroup(group, "echo", {stream: ">"}, count=1, block=0)
        for _name, entries in got or []:
            for entry_id, fields in entries:
                async with redis.pipeline(transaction=False) as pipe:
                    pipe.xack(stream, group, entry_id)
                    pipe.xadd(reply, {"type": "done", "seq": fields.get("seq", "")},
                              maxlen=1000, approximate=True)
                    await pipe.execute()


def main(argv: list[str]) -> int:
    url, stream, reply, group = argv
    asyncio.run(echo(url, stream, reply, group))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
