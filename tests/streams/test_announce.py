"""Worker-type declarations in Redis: written by workers, read by gateways, readable with
redis-cli, kept while no worker runs."""

from __future__ import annotations

from redis.asyncio import Redis

from schemas.catalogue import STATE
from schemas.plugins import LoadedPlugin
from streams import registry
from streams.keys import QueueKeys, announced_types
from tests.schemas.test_plugins import plugin

TEAM = LoadedPlugin("team", "team-plugin 1.0", plugin(gpu=True))
KEYS = QueueKeys("team-cpu")


async def test_a_declaration_is_plain_fields_and_json_without_ttl(redis: Redis) -> None:
    assert await registry.announce(redis, KEYS, TEAM, "w1", force=True) is True
    assert await redis.smembers("ai:worker_types") == {"team-cpu"}
    assert announced_types() == "ai:worker_types"
    fields = await redis.hgetall("ai:{team-cpu}:declaration")
    assert fields["worker_type"] == "team-cpu" and fields["framework"] == "team_cpu"
    assert fields["device"] == "cpu" and fields["model_types"] == "team_model"
    assert fields["source"] == "team-plugin 1.0" and fields["announced_by"] == "w1"
    assert await redis.ttl(KEYS.declaration) == -1  # stays: a type scaled to zero is known
    found, problems = await registry.announced(redis)
    assert problems == []
    assert [(p.name, p.source, p.plugin) for p in found] == [
        ("team-cpu", "announced by team-plugin 1.0", TEAM.plugin)]


async def test_a_heartbeat_writes_only_what_changed(redis: Redis) -> None:
    await registry.announce(redis, KEYS, TEAM, "w1", force=True)
    assert await registry.announce(redis, KEYS, TEAM, "w2") is False  # same: one read
    assert await redis.hget(KEYS.declaration, "announced_by") == "w1"
    await redis.delete(KEYS.declaration, "ai:worker_types")  # an operator cleaned up
    assert await registry.announce(redis, KEYS, TEAM, "w2") is True  # written again
    other = LoadedPlugin("team", "team-plugin 2.0", TEAM.plugin)
    assert await registry.announce(redis, KEYS, other, "w3") is True  # another version
    assert await redis.hget(KEYS.declaration, "source") == "team-plugin 2.0"


async def test_unreadable_declarations_are_reported_and_skipped(redis: Redis) -> None:
    await registry.announce(redis, KEYS, TEAM, "w1", force=True)
    await redis.sadd("ai:worker_types", "ghost", "broken")
    await redis.hset(QueueKeys("broken").declaration,
                     mapping={"declaration": "{not json", "digest": "x", "source": "?"})
    cache: dict[str, LoadedPlugin] = {}
    found, problems = await registry.announced(redis, cache=cache)
    assert [p.name for p in found] == ["team-cpu"]
    assert len(problems) == 2
    assert any(p.startswith("ghost: listed, but no declaration") for p in problems)
    assert any(p.startswith("broken: malformed declaration") for p in problems)
    again, _ = await registry.announced(redis, cache=cache)
    assert again[0] is found[0]  # parsed once per digest


async def test_the_gateway_catalogue_learns_and_forgets(redis: Redis) -> None:
    """What a gateway's refresh does with what it reads (gateway/catalogue.py)."""
    await registry.announce(redis, KEYS, TEAM, "w1", force=True)
    try:
        found, _ = await registry.announced(redis)
        assert STATE.new_types(found) == ["team-cpu", "team-cpu-gpu"]
        assert STATE.learn(found) and "team_model" in STATE.tables.models
    finally:
        STATE.learn([])
    assert "team_model" not in STATE.tables.models
