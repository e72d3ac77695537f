"""Real Redis topologies on this host: a Redis Cluster and a Sentinel-watched master + replica.

For the test session and the benchmarks (and for anyone who wants to watch a failover by hand):
every process is a ``redis-server`` child on a free port of 127.0.0.1, in a temporary directory,
stopped and removed by ``close()``. Nothing here is used by a deployment.

* ``LocalCluster(masters=3, replicas=1)``: ``redis-server --cluster-enabled yes`` per node, then
  ``redis-cli --cluster create … --cluster-replicas 1 --cluster-yes``; ready when every node
  says ``cluster_state:ok`` and every replica's link to its master is up.
* ``LocalSentinel()``: a master, one replica and three ``redis-server --sentinel`` watching it
  as service ``aiq`` (quorum 2); ready when every sentinel knows the replica and the others.

Failover is quick on purpose (``node_timeout_ms`` / ``down_after_ms`` default 1000 ms), so a
test that kills a master sees the new one within seconds.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import redis

from aiq.redis_server import HOST, RedisServer, RedisServerStartError, find_redis_server, free_port

__all__ = ["SENTINEL_SERVICE", "LocalCluster", "LocalSentinel", "TopologyError"]

SENTINEL_SERVICE = "aiq"
READY_TIMEOUT_S = 60.0
_POLL_S = 0.05


class TopologyError(RuntimeError):
    """A cluster or Sentinel set-up did not come up (the message tells which step)."""


def _sync(port: int) -> redis.Redis:
    return redis.Redis(host=HOST, port=port, socket_timeout=2, socket_connect_timeout=2,
                       decode_responses=True)


def _poll(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TopologyError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(_POLL_S)


def _redis_cli(executable: str) -> str:
    beside = Path(executable).with_name("redis-cli")
    found = str(beside) if beside.exists() else shutil.which("redis-cli")
    if not found:
        raise TopologyError("redis-cli not found (beside redis-server or on PATH)")
    return found


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _cluster_node_port() -> int:
    """A free port whose cluster-bus port (+10000) is free too; ``redis-cli --cluster create``
    assumes that offset. Drawn below the ephemeral range, where nothing picks ports by itself."""
    for _ in range(1000):
        port = random.randint(20000, 29999)
        if port not in _TAKEN and _bindable(port) and _bindable(port + 10000):
            _TAKEN.add(port)
            return port
    raise TopologyError("no free port pair for a cluster node")


_TAKEN: set[int] = set()  # handed out in this process (not yet bound by their servers)


class _Group:
    """Owns a temp dir and the servers in it."""

    def __init__(self, executable: str | None, prefix: str) -> None:
        self.executable = executable or find_redis_server()
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.servers: list[RedisServer] = []

    def _server(self, name: str, **kwargs: object) -> RedisServer:
        server = RedisServer(data_dir=self.root / name, executable=self.executable,
                             die_with_parent=True, **kwargs)  # type: ignore[arg-type]
        self.servers.append(server)
        return server

    def close(self) -> None:
        for server in self.servers:
            server.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        raise NotImplementedError


class LocalCluster(_Group):
    """``masters`` masters with ``replicas`` replicas each; ``url`` is a ``redis+cluster://``."""

    def __init__(self, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1000,
                 executable: str | None = None, appendonly: bool = False) -> None:
        super().__init__(executable, "aiq-cluster-")
        self.masters, self.replicas = masters, replicas
        config = {"cluster-enabled": "yes", "cluster-config-file": "nodes.conf",
                  "cluster-node-timeout": str(node_timeout_ms),
                  "cluster-replica-validity-factor": "0"}  # any replica may take over
        for i in range(masters * (1 + replicas)):
            self._server(f"node{i}", port=_cluster_node_port(), appendonly=appendonly,
                         extra_config=config)

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{HOST}:{p}" for p in self.ports[:3])

    def start(self) -> None:
        for server in self.servers:
            server.start()
        nodes = [f"{HOST}:{p}" for p in self.ports]
        done = subprocess.run(
            [_redis_cli(self.executable), "--cluster", "create", *nodes,
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=READY_TIMEOUT_S, check=False)
        if done.returncode != 0:
            raise TopologyError(f"redis-cli --cluster create failed: {done.stdout[-2000:]}"
                                f"{done.stderr[-2000:]}")
        self.wait_ok()

    def _node_ok(self, port: int) -> bool:
        with _sync(port) as r:
            info = r.cluster("INFO")  # parsed into a dict by redis-py
            if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_ok", 0)) != 16384:
                return False
            role = r.info("replication")
            return bool(role["role"] == "master" or role.get("master_link_status") == "up")

    def wait_ok(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Every running node sees a whole cluster, and every replica is in sync."""
        for server in self.servers:
            if server.is_running:
                _poll(lambda p=server.port: self._node_ok(p), timeout,  # type: ignore[misc]
                      f"cluster node {server.port} ok")

    def master_ports(self) -> list[int]:
        for server in self.servers:
            if not server.is_running:
                continue
            with _sync(server.port) as r:
                slots = r.execute_command("CLUSTER SLOTS")
            return sorted({int(entry[2][1]) for entry in slots})
        raise TopologyError("no cluster node is running")

    def master_of(self, key: str) -> RedisServer:
        """The server that now holds ``key``'s slot as master."""
        for server in self.servers:
            if not server.is_running:
                continue
            with _sync(server.port) as r:
                slot = int(r.execute_command("CLUSTER KEYSLOT", key))
                for entry in r.execute_command("CLUSTER SLOTS"):
                    if int(entry[0]) <= slot <= int(entry[1]):
                        port = int(entry[2][1])
                        return next(s for s in self.servers if s.port == port)
        raise TopologyError("no cluster node is running")

    def wait_failover(self, old: RedisServer, timeout: float = READY_TIMEOUT_S) -> None:
        """After ``old`` (a master) was killed: every slot is served again, by its replica."""
        _poll(lambda: old.port not in self.master_ports() and self._all_slots_ok(), timeout,
              "cluster failover")

    def _all_slots_ok(self) -> bool:
        running = [s for s in self.servers if s.is_running]
        return all(self._node_ok(s.port) for s in running if self._is_master(s.port))

    def _is_master(self, port: int) -> bool:
        with _sync(port) as r:
            return bool(r.info("replication")["role"] == "master")

    def flushall(self) -> None:
        for port in self.master_ports():
            with _sync(port) as r:
                r.flushall()

    def restart(self, server: RedisServer) -> None:
        """Start a killed node again: it rejoins (as a replica if it was failed over)."""
        server.start()
        self.wait_ok()


class LocalSentinel(_Group):
    """A master + one replica watched by three sentinels; ``url`` is a ``redis+sentinel://``."""

    def __init__(self, down_after_ms: int = 1000, executable: str | None = None,
                 appendonly: bool = False, sentinels: int = 3) -> None:
        super().__init__(executable, "aiq-sentinel-")
        self.master = self._server("master", appendonly=appendonly)
        self.replica = self._server("replica", appendonly=appendonly, extra_config={
            "replicaof": f"{HOST} {self.master.port}"})
        self.data_nodes = [self.master, self.replica]
        self.sentinels = [self._server(f"sentinel{i}", sentinel=True, port=free_port(),
                                       extra_config=self._sentinel_config(down_after_ms))
                          for i in range(sentinels)]

    def _sentinel_config(self, down_after_ms: int) -> dict[str, str]:
        name = SENTINEL_SERVICE
        return {f"sentinel monitor {name}": f"{HOST} {self.master.port} 2",
                f"sentinel down-after-milliseconds {name}": str(down_after_ms),
                f"sentinel failover-timeout {name}": "10000",
                f"sentinel parallel-syncs {name}": "1"}

    @property
    def url(self) -> str:
        hosts = ",".join(f"{HOST}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SENTINEL_SERVICE}"

    def start(self) -> None:
        for server in self.servers:
            server.start()
        self.wait_ready()

    def _sentinel_ready(self, port: int, master_port: int) -> bool:
        with _sync(port) as r:
            fields = r.sentinel_master(SENTINEL_SERVICE)  # parsed by redis-py
            return bool(int(fields["port"]) == master_port and not fields.get("is_sdown")
                        and int(fields["num-slaves"]) >= 1
                        and int(fields["num-other-sentinels"]) >= len(self.sentinels) - 1)

    def _replicas_synced(self, master_port: int) -> bool:
        with _sync(master_port) as r:
            info = r.info("replication")
            return info["role"] == "master" and int(info["connected_slaves"]) >= 1 and all(
                v.get("state") == "online" for k, v in info.items()
                if k.startswith("slave") and isinstance(v, dict))

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """The sentinels agree on a master that has a replica in sync."""
        master = self.current_master()
        _poll(lambda: self._replicas_synced(master.port), timeout, "replica in sync")
        for s in self.sentinels:
            if s.is_running:
                _poll(lambda p=s.port: self._sentinel_ready(p, master.port),  # type: ignore[misc]
                      timeout, f"sentinel {s.port} ready")

    def current_master(self) -> RedisServer:
        """The data node the sentinels now name as master."""
        for s in self.sentinels:
            if not s.is_running:
                continue
            try:
                with _sync(s.port) as r:
                    _, port = r.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                                                SENTINEL_SERVICE)
            except (redis.RedisError, OSError):
                continue
            return next(n for n in self.data_nodes if n.port == int(port))
        raise TopologyError("no sentinel answers")

    def wait_failover(self, old: RedisServer, timeout: float = READY_TIMEOUT_S) -> RedisServer:
        """After ``old`` (the master) was killed: the replica the sentinels promoted."""
        _poll(lambda: self.current_master() is not old, timeout, "sentinel failover")
        new = self.current_master()
        _poll(lambda: _sync(new.port).info("replication")["role"] == "master", timeout,
              "promoted replica takes writes")
        return new

    def flushall(self) -> None:
        with _sync(self.current_master().port) as r:
            r.flushall()

    def restart(self, server: RedisServer) -> None:
        """Start a killed data node again: the sentinels make it a replica of the new master."""
        try:
            server.start()
        except RedisServerStartError as exc:
            raise TopologyError(str(exc)) from None
        self.wait_ready()
