"""The one connection factory of every aiq process: a single Redis, Sentinel or Cluster, by URL.

=====================================================  ========================================
``redis://[user:pass@]host:port/db``                   one Redis (``rediss://``: TLS)
``redis+sentinel://[user:pass@]h1:26379,h2:26379/svc``  the master of Sentinel service ``svc``
``redis+cluster://[user:pass@]h1:7000,h2:7001``         a Redis Cluster (any reachable nodes)
=====================================================  ========================================

``rediss+sentinel://`` and ``rediss+cluster://`` use TLS to the data nodes. Settings can say the
same without a special URL (``RedisSettings``: ``REDIS_CLUSTER=1``, or ``REDIS_SENTINELS`` +
``REDIS_SENTINEL_SERVICE``). The URL's query string passes options through to redis-py
(``?ssl_ca_certs=/etc/ca.pem``); ``sentinel_password`` authenticates to the sentinels.

Every client is typed ``redis.asyncio.Redis``: the cluster client answers the same commands
(each keyed command goes to its slot's master; a pipeline is split by node). What a cluster
cannot do is a multi-key command across slots: every aiq key of one worker type shares the slot
of ``{type}``, and the readers that span types group their keys with ``slot_groups``.

redis-py's asyncio connection packs commands in Python, re-joining its buffer for every argument;
a batched script call has hundreds. ``HiredisPackConnection`` packs them with hiredis's C
``pack_command`` instead (what redis-py's sync client already does when hiredis is installed),
and bounds each write by ``socket_timeout`` without a task per write (``_WriteInTask``).
redis-py lets a URL's scheme override a ``connection_class`` argument, so the class is set on the
pool once it is made (``use_fast_packer``), before it opens a connection.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from urllib.parse import unquote, urlsplit

import hiredis
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.cluster import key_slot
from redis.connection import parse_url
from redis.exceptions import ClusterDownError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

Topology = Literal["single", "sentinel", "cluster"]
SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}
CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
DEFAULT_SENTINEL_PORT = 26379


class _HiredisPacker:
    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:  # e.g. "CLIENT SETNAME"
            args = (*args[0].split(), *args[1:])
        return [hiredis.pack_command(args)]


class _WriteInTask(AbstractConnection):  # type: ignore[misc]
    """redis-py bounds each write by ``socket_timeout`` (5 s by default) with
    ``asyncio.wait_for``, which on Python 3.11 runs the write in a task of its own: three more
    turns of the event loop for every command or pipeline (five in all for a PING, not two).
    ``asyncio.timeout`` bounds it the same way inside the caller's task.
    Otherwise as redis-py's ``send_packed_command``: a write that fails or times out closes the
    connection."""

    async def send_packed_command(self, command: bytes | str | Iterable[bytes],
                                  check_health: bool = True) -> None:
        if not self.is_connected:
            await self.connect_check_health(check_health=False)
        if check_health:
            await self.check_health()
        if isinstance(command, str):
            command = command.encode()
        if isinstance(command, bytes):
            command = [command]
        writer = self._writer
        assert writer is not None
        try:
            async with asyncio.timeout(self.socket_timeout or None):
                writer.writelines(command)
                await writer.drain()
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as e:
            await self.disconnect(nowait=True)
            err_no, errmsg = ("UNKNOWN", e.args[0]) if len(e.args) == 1 else e.args[:2]
            raise RedisConnectionError(
                f"Error {err_no} while writing to socket. {errmsg}.") from e
        except BaseException:
            await self.disconnect(nowait=True)  # a half-written command: never reuse it
            raise


class HiredisPackConnection(_HiredisPacker, _WriteInTask, Connection):  # type: ignore[misc]
    pass


class HiredisPackSSLConnection(_HiredisPacker, _WriteInTask, SSLConnection):  # type: ignore[misc]
    pass


class HiredisPackSentinelConnection(
        _HiredisPacker, _WriteInTask, SentinelManagedConnection):  # type: ignore[misc]
    pass


class HiredisPackSentinelSSLConnection(
        _HiredisPacker, _WriteInTask, SentinelManagedSSLConnection):  # type: ignore[misc]
    pass


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class _Bounded:
    """A pool that holds at most ``max_connections`` and makes a caller past them wait, first
    come first served, up to ``timeout`` seconds (then ``ConnectionError("No connection
    available.")``), instead of raising ``MaxConnectionsError``. redis-py's
    BlockingConnectionPool does the same, but takes a condition lock and arms an asyncio timeout
    on every checkout, which was a tenth of the gateway's CPU per submit (issue #15): here a
    checkout that finds a free slot costs a counter, and one that waits costs a future and a
    timer; a released connection's slot goes straight to the first waiter.

    Every connection handed out holds one slot, given back when it is released (also when
    redis-py releases it itself after a failed connect).
    """

    max_connections: int

    def __init__(self, *args: Any, timeout: float | None = 20, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout = timeout
        self._free: int = self.max_connections
        self._waiters: deque[asyncio.Future[bool]] = deque()

    def _give_slot(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return
        self._free += 1

    async def _take_slot(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)
        timer = None if self.timeout is None else loop.call_later(
            self.timeout, _expire, waiter)
        try:
            got = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self._give_slot()  # handed a slot, but cancelled before using it: pass it on
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if not got:
            raise RedisConnectionError("No connection available.")

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        await self._take_slot()
        try:
            connection = await super().get_connection()  # type: ignore[misc]
        except BaseException:
            self._give_slot()  # a connection released in there held no slot yet
            raise
        connection.aiq_holds_slot = True  # a flag, not a WeakSet: a tenth of the cost
        return connection

    async def release(self, connection: Any) -> None:
        try:
            await super().release(connection)  # type: ignore[misc]
        finally:
            if getattr(connection, "aiq_holds_slot", False):
                connection.aiq_holds_slot = False
                self._give_slot()


class BoundedPool(_Bounded, ConnectionPool):  # type: ignore[misc]
    """The single-node pool of a process that must not open more than ``max_connections``."""


class BoundedSentinelPool(_Bounded, SentinelConnectionPool):  # type: ignore[misc]
    """The Sentinel master's pool, bounded the same way."""


def use_fast_packer(pool: ConnectionPool) -> ConnectionPool:
    """Give ``pool`` (made from a URL, no connection yet) the hiredis packer, keeping TLS when
    the URL asked for it."""
    tls = issubclass(pool.connection_class, SSLConnection)
    pool.connection_class = HiredisPackSSLConnection if tls else HiredisPackConnection
    return pool


@dataclass(frozen=True)
class RedisTarget:
    """Where Redis is, parsed once from settings (``RedisSettings.target``)."""

    topology: Topology
    url: str  # a single server's URL, as given
    nodes: tuple[tuple[str, int], ...] = ()  # sentinels, or cluster nodes to start from
    service: str = "mymaster"  # the Sentinel service
    tls: bool = False
    options: dict[str, Any] = field(default_factory=dict)  # username, password, db, ssl_*
    sentinel_options: dict[str, Any] = field(default_factory=dict)

    @property
    def display(self) -> str:
        """The target without credentials, for logs and banners."""
        if self.topology == "single":
            parts = urlsplit(self.url)
            host = parts.hostname or "localhost"
            port = f":{parts.port}" if parts.port else ""
            return f"{parts.scheme}://{host}{port}{parts.path}"
        nodes = ",".join(f"{h}:{p}" for h, p in self.nodes)
        scheme = ("rediss+" if self.tls else "redis+") + self.topology
        return f"{scheme}://{nodes}" + (f"/{self.service}" if self.topology == "sentinel" else "")


def _nodes(netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    out = []
    for part in filter(None, (p.strip() for p in netloc.split(","))):
        if part.startswith("["):  # [ipv6]:port
            host, _, rest = part[1:].partition("]")
            port = rest.removeprefix(":")
        elif part.count(":") == 1:
            host, _, port = part.partition(":")
        else:
            host, port = part, ""
        out.append((host, int(port) if port else default_port))
    if not out:
        raise ValueError("name at least one host:port")
    return tuple(out)


def _split_special(url: str) -> tuple[str, str, str, str, str]:
    """(scheme, userinfo, netloc of several hosts, path, query): urlsplit cannot parse a netloc
    of comma-separated hosts (its .port fails), so the authority is cut out by hand."""
    scheme, rest = url.split("://", 1)
    authority, slash, tail = rest.partition("/")
    path, _, query = ("/" + tail if slash else "").partition("?")
    if "?" in authority:
        authority, _, query = authority.partition("?")
    userinfo, at, hosts = authority.rpartition("@")
    return scheme.lower(), userinfo if at else "", hosts, path, query


def _credentials(userinfo: str) -> dict[str, Any]:
    if not userinfo:
        return {}
    user, colon, password = userinfo.partition(":")
    out: dict[str, Any] = {}
    if colon:
        out["password"] = unquote(password)
        if user:
            out["username"] = unquote(user)
    else:
        out["password"] = unquote(user)  # redis://secret@host: Redis's own convention
    return out


def _query_options(query: str) -> dict[str, Any]:
    """URL query options as redis-py's ``parse_url`` types them (timeouts as floats, …)."""
    if not query:
        return {}
    return {k: v for k, v in parse_url(f"redis://localhost/?{query}").items()
            if k not in ("host", "port", "db")}


def parse_target(url: str, *, cluster: bool = False, sentinels: str | None = None,
                 sentinel_service: str | None = None,
                 sentinel_password: str | None = None) -> RedisTarget:
    """The target a URL and the topology settings name; ``ValueError`` says what is wrong."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in SENTINEL_SCHEMES or scheme in CLUSTER_SCHEMES:
        return _parse_special(url, sentinel_password)
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"unknown scheme {scheme or url!r}: use redis://, rediss://, "
                         "redis+sentinel:// or redis+cluster://")
    if not sentinels and not cluster:
        return RedisTarget("single", url)
    parts = urlsplit(url)
    options = {**_credentials(parts.netloc.rpartition("@")[0]), **_query_options(parts.query)}
    tls = scheme == "rediss"
    if cluster and not sentinels:
        return RedisTarget("cluster", url, ((parts.hostname or "localhost", parts.port or 6379),),
                           tls=tls, options=options)
    if parts.path.strip("/"):
        options["db"] = int(parts.path.strip("/"))
    return RedisTarget("sentinel", url, _nodes(sentinels or "", DEFAULT_SENTINEL_PORT),
                       service=sentinel_service or "mymaster", tls=tls, options=options,
                       sentinel_options={"password": sentinel_password} if sentinel_password
                       else {})


def _parse_special(url: str, sentinel_password: str | None) -> RedisTarget:
    scheme, userinfo, hosts, path, query = _split_special(url)
    options = {**_credentials(userinfo), **_query_options(query)}
    sentinel_options: dict[str, Any] = {}
    if "sentinel_password" in options:
        sentinel_options["password"] = options.pop("sentinel_password")
    if sentinel_password:
        sentinel_options["password"] = sentinel_password
    if scheme in CLUSTER_SCHEMES:
        return RedisTarget("cluster", url, _nodes(hosts, 6379), tls=CLUSTER_SCHEMES[scheme],
                           options=options)
    segments = [s for s in path.split("/") if s]
    if not segments:
        raise ValueError("a Sentinel URL names its service: redis+sentinel://host:26379/"
                         "<service>[/<db>]")
    if len(segments) > 1:
        options["db"] = int(segments[1])
    return RedisTarget("sentinel", url, _nodes(hosts, DEFAULT_SENTINEL_PORT),
                       service=segments[0], tls=SENTINEL_SCHEMES[scheme], options=options,
                       sentinel_options=sentinel_options)


# Pool options of the single-node client that the cluster client has no use for.
_NOT_FOR_CLUSTER = ("timeout", "db", "connection_class", "retry_on_timeout")


def connect(target: RedisTarget | str, *, blocking_pool: bool = False, **options: Any) -> Redis:
    """An asyncio client on ``target`` (decoded responses, the hiredis packer where redis-py
    lets us set it). ``options`` go to redis-py's pool or cluster client: ``max_connections``
    (per node on a cluster), socket timeouts, ``client_name``, ``retry``, …; ``blocking_pool``
    waits ``timeout`` seconds for a free connection instead of raising (single and Sentinel)."""
    if isinstance(target, str):
        target = parse_target(target)
    options.setdefault("decode_responses", True)
    if target.topology == "single":
        pool_class = BoundedPool if blocking_pool else ConnectionPool
        if not blocking_pool:
            options.pop("timeout", None)
        return Redis.from_pool(use_fast_packer(pool_class.from_url(target.url, **options)))
    options = {**target.options, **options}
    if target.topology == "sentinel":
        return _sentinel_master(target, blocking_pool, options)
    return _cluster(target, options)


def _sentinel_master(target: RedisTarget, blocking_pool: bool, options: dict[str, Any]) -> Redis:
    if not blocking_pool:
        options.pop("timeout", None)
    timeouts = {k: v for k, v in options.items() if k.startswith("socket_")}
    sentinel = Sentinel(list(target.nodes), sentinel_kwargs={**timeouts,
                                                             **target.sentinel_options})
    options["connection_class"] = (HiredisPackSentinelSSLConnection if target.tls
                                   else HiredisPackSentinelConnection)
    pool_class = BoundedSentinelPool if blocking_pool else SentinelConnectionPool
    client = sentinel.master_for(target.service, connection_pool_class=pool_class, **options)
    return cast(Redis, client)


def _cluster(target: RedisTarget, options: dict[str, Any]) -> Redis:
    for name in _NOT_FOR_CLUSTER:
        options.pop(name, None)
    if target.tls:
        options["ssl"] = True
    nodes = [ClusterNode(host, port) for host, port in target.nodes]
    client = RedisCluster(startup_nodes=nodes, **options)
    return cast(Redis, client)


def client(url: str | RedisTarget, **options: Any) -> Redis:
    """``connect`` under its old name: an asyncio client with decoded responses."""
    return connect(url, **options)


def is_cluster(redis: Redis) -> bool:
    return isinstance(redis, RedisCluster)


def connection_options(redis: Redis) -> dict[str, Any]:
    """The options each new connection of ``redis`` gets (``socket_timeout``, …)."""
    if is_cluster(redis):
        return dict(cast(RedisCluster, redis).connection_kwargs)
    return dict(redis.connection_pool.connection_kwargs)


def slot_groups(redis: Redis, keys: list[str]) -> list[list[str]]:
    """``keys`` in groups that one multi-key command may name: all of them on a single Redis,
    one group per hash slot on a cluster (order kept)."""
    if not is_cluster(redis):
        return [list(keys)] if keys else []
    groups: dict[int, list[str]] = {}
    for key in keys:
        groups.setdefault(key_slot(key.encode()), []).append(key)
    return list(groups.values())


async def server_version(redis: Redis) -> str | None:
    """The Redis version, once Redis answers a command (PING is refused while it loads); raises
    what redis-py raises when it cannot. On a cluster: one node's, once that node says the
    cluster is ``ok`` (every slot served), so a failover in progress reads as unavailable."""
    if is_cluster(redis):
        cluster = cast(RedisCluster, redis)
        await cluster.initialize()  # learns the nodes on first use; a no-op after
        node = cluster.get_random_node()
        state = await redis.cluster_info(target_nodes=node)
        if state.get("cluster_state") != "ok":
            raise ClusterDownError(f"cluster_state is {state.get('cluster_state')}")
        info = await redis.info("server", target_nodes=node)
    else:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.ping()
            pipe.info("server")
            _, info = await pipe.execute()
    version = info.get("redis_version")
    return str(version) if version is not None else None


async def on_one_connection(redis: Redis, key: str, commands: list[tuple[Any, ...]]
                            ) -> list[Any]:
    """Send ``commands`` back to back on ONE connection to the master that holds ``key``, and
    their replies (an error in place as an exception object). WAIT needs this: it counts the
    replicas that have the writes of the connection it runs on."""
    if not is_cluster(redis):
        async with redis.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            return list(await pipe.execute(raise_on_error=False))
    node = cast(RedisCluster, redis).get_node_from_key(key)
    connection = node.acquire_connection()
    try:
        await connection.send_packed_command(connection.pack_commands(commands))
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await connection.read_response())
            except ResponseError as exc:
                replies.append(exc)
        return replies
    except BaseException:
        await connection.disconnect()  # replies may be left unread on it
        raise
    finally:
        node.release(connection)
