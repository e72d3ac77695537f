"""The Lua scripts of every state transition, loaded once and run by SHA.

Each file in ``streams/lua`` is one transition; ``_common.lua`` is prepended to all of them. A
script returns ``{code, detail, ...}``; ``errors.raise_for`` turns negative codes into typed
errors. Scripts can also be queued on a pipeline (``queue``), and ``execute`` re-runs those that
met NOSCRIPT (after a Redis restart the script cache is empty; only the refused ones did not run);
``execute`` of a single call sends it without a pipeline.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError, ResponseError

_LUA_DIR = Path(__file__).parent / "lua"
_COMMON = (_LUA_DIR / "_common.lua").read_text()

Arg = str | int | float


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    text: str
    sha: str

    @classmethod
    def load(cls, name: str) -> Script:
        text = _COMMON + "\n" + (_LUA_DIR / f"{name}.lua").read_text()
        return cls(name, text, hashlib.sha1(text.encode()).hexdigest())

    async def __call__(self, redis: Redis, keys: list[str], args: list[Arg]) -> Any:
        # The command itself, not ``redis.evalsha``: two wrappers fewer on every submit.
        try:
            return await redis.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await redis.script_load(self.text)
            return await redis.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)

    def queue(self, pipe: Pipeline, keys: list[str], args: list[Arg]) -> None:
        # Not ``pipe.evalsha``: redis-py's cluster pipeline refuses that method, yet routes
        # the command itself by its keys (one slot: every key of a call shares ``{type}``).
        pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


SUBMIT = Script.load("submit")
START = Script.load("start")
PROGRESS = Script.load("progress")
COMPLETE = Script.load("complete")
FAIL = Script.load("fail")
RETRY = Script.load("retry")
PROMOTE = Script.load("promote")
HANDBACK = Script.load("handback")
CANCEL = Script.load("cancel")
CONFIRM_CANCEL = Script.load("confirm_cancel")
RENEW = Script.load("renew")
DEAD_LETTER = Script.load("dead_letter")
WAIT = Script.load("wait")
GPU_PEAK = Script.load("gpu_peak")
FORGET_CONSUMER = Script.load("forget_consumer")
APPEND_LOG = Script.load("append_log")
READ = Script.load("read")
ALL = (SUBMIT, START, PROGRESS, COMPLETE, FAIL, RETRY, PROMOTE, HANDBACK, CANCEL,
       CONFIRM_CANCEL, RENEW, DEAD_LETTER, WAIT, GPU_PEAK, FORGET_CONSUMER, APPEND_LOG, READ)
_BY_SHA = {s.sha: s for s in ALL}

# TIME inside a pipeline: redis-py's cluster pipeline refuses a plain TIME (it has no key to
# route by); a keyless script runs on any node, and on a single Redis it is the same round trip.
_SERVER_TIME = "return redis.call('TIME')"


def queue_server_time(pipe: Pipeline) -> None:
    """Queue the server's clock (``[seconds, microseconds]``) on ``pipe``."""
    pipe.execute_command("EVAL", _SERVER_TIME, 0)


async def execute(
    redis: Redis,
    calls: list[tuple[Script, list[str], list[Arg]]],
    then: Callable[[Pipeline], None] | None = None,
) -> list[Any]:
    """Run many script calls in one pipeline (one round trip); results in order. ``then`` may
    queue more (plain) commands after them; their results follow the scripts'.

    Errors other than NOSCRIPT are returned in place, as exception objects. A single call goes
    without a pipeline: redis-py's releases its connection in a task of its own
    (``asyncio.shield``), three more turns of the event loop per round trip.
    """
    if len(calls) == 1 and then is None:
        script, keys, args = calls[0]
        try:
            return [await script(redis, keys, args)]  # reloaded by itself at NOSCRIPT
        except ResponseError as exc:  # in place, as the pipeline returns it
            return [exc]
    results = await _run(redis, calls, then)
    missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
    if missing:
        for script in {calls[i][0] for i in missing}:
            await redis.script_load(script.text)
        again = await _run(redis, [calls[i] for i in missing], None)
        for i, r in zip(missing, again, strict=True):
            results[i] = r
    return results


async def _run(
    redis: Redis,
    calls: list[tuple[Script, list[str], list[Arg]]],
    then: Callable[[Pipeline], None] | None,
) -> list[Any]:
    async with redis.pipeline(transaction=False) as pipe:
        for script, keys, args in calls:
            script.queue(pipe, keys, args)
        if then is not None:
            then(pipe)
        return list(await pipe.execute(raise_on_error=False))
