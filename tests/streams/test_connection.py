"""The connection factory's parsing of Redis targets (URL and settings), and its clients on the
real topologies (tests/conftest.py): what each topology is, and how a bad URL is refused."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from aiq.redis_server import redis_reachable
from streams.connection import connect, parse_target, server_version, slot_groups
from streams.events import feed_streams
from streams.settings import RedisSettings
from tests.conftest import topology_url


def test_single_urls_stay_as_given() -> None:
    for url in ("redis://cache.internal:6390/0", "rediss://h:6380/2?ssl_ca_certs=/ca.pem"):
        target = parse_target(url)
        assert target.topology == "single" and target.url == url


def test_sentinel_url() -> None:
    t = parse_target("redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2,[::1]:26380/mymaster/2"
                     "?sentinel_password=sp&socket_timeout=2")
    assert t.topology == "sentinel" and t.service == "mymaster" and not t.tls
    assert t.nodes == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380))
    assert t.options == {"password": "s3cret", "db": 2, "socket_timeout": 2.0}
    assert t.sentinel_options == {"password": "sp"}
    assert "s3cret" not in t.display and t.display.startswith("redis+sentinel://10.0.0.1:26379")


def test_cluster_url_and_tls() -> None:
    t = parse_target("rediss+cluster://user:pw@n1:7000,n2:7001")
    assert (t.topology, t.tls, t.nodes) == ("cluster", True, (("n1", 7000), ("n2", 7001)))
    assert t.options == {"username": "user", "password": "pw"}


def test_settings_name_the_topology_without_a_special_url() -> None:
    s = RedisSettings(redis_url="redis://:pw@ignored:1/3", redis_sentinels="a:1,b:2",
                      redis_sentinel_service="svc")
    t = s.target
    assert (t.topology, t.service, t.nodes) == ("sentinel", "svc", (("a", 1), ("b", 2)))
    assert t.options == {"password": "pw", "db": 3}
    c = RedisSettings(redis_url="redis://node:7000", redis_cluster=True).target
    assert (c.topology, c.nodes) == ("cluster", (("node", 7000),))


@pytest.mark.parametrize(("url", "says"), [
    ("http://cache.internal:6390", "unknown scheme"),
    ("redis+sentinel://h:26379", "names its service"),
    ("redis+cluster://", "at least one host"),
])
def test_bad_urls_are_refused_with_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        RedisSettings(redis_url=url)


@pytest.mark.parametrize("topology", ["single", "sentinel", "cluster"])
async def test_each_topology_answers_and_groups_keys_by_slot(
        request: pytest.FixtureRequest, topology: str) -> None:
    url = topology_url(request, topology)
    redis = connect(url)
    try:
        assert await server_version(redis)
        feeds = list(feed_streams())
        groups = slot_groups(redis, feeds)
        if topology == "cluster":  # one group per worker type's slot, none spanning two
            assert len(groups) == len(feeds)
        else:
            assert groups == [feeds]
        got = await redis.xread({k: "0" for k in groups[0]}, count=1)  # a legal multi-key read
        assert got == [] or got is None or isinstance(got, list | dict)
    finally:
        await redis.aclose()
    assert await asyncio.to_thread(redis_reachable, url, 2)
