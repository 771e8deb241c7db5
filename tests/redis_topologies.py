"""Real Redis topologies on loopback for tests: Sentinel (a master, a replica, three sentinels)
and Redis Cluster (three masters, optionally with a replica each, for failover tests).

Each server is a ``ManagedProcess``; ``SentinelSet.stop()`` / ``Cluster.stop()`` end them all.
Sentinels and cluster nodes rewrite their config files, so each gets a temporary one of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from proxy.testing.processes import ManagedProcess, free_port, redis_binary, start_redis

SERVICE = "mymaster"


def start_replica(master_port: int) -> ManagedProcess:
    """A redis-server replicating ``master_port``, once its first sync finished."""
    return start_redis(
        workdir=tempfile.mkdtemp(prefix="lp-replica-"),
        extra_args=["--replicaof", "127.0.0.1", str(master_port)],
        name="redis-replica",
        ready="sync: Finished with success",
    )


def start_sentinel(master_port: int, quorum: int = 2) -> ManagedProcess:
    """A sentinel watching ``master_port`` with fast failure detection (1 s)."""
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="lp-sentinel-"))
    config = workdir / "sentinel.conf"
    config.write_text(
        f"port {port}\n"
        "bind 127.0.0.1\n"
        f"dir {workdir}\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} {quorum}\n"
        f"sentinel down-after-milliseconds {SERVICE} 1000\n"
        f"sentinel failover-timeout {SERVICE} 5000\n"
        f"sentinel parallel-syncs {SERVICE} 1\n",
        encoding="utf-8",
    )
    argv = [redis_binary(), str(config), "--sentinel"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROXY_", "LAYERS_"))}
    return ManagedProcess("sentinel", argv, env, port).start("+monitor master")


@dataclass
class SentinelSet:
    """A master, one replica and three sentinels."""

    master: ManagedProcess
    replica: ManagedProcess
    sentinels: list[ManagedProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The proxy's ``REDIS_URL`` for this set."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def master_port(self) -> int | None:
        """The master's port as the first answering sentinel names it."""
        for sentinel in self.sentinels:
            try:
                client = redis.Redis(port=sentinel.port, socket_timeout=1)
                addr = client.execute_command(  # type: ignore[no-untyped-call]
                    "SENTINEL", "get-master-addr-by-name", SERVICE
                )
                client.close()
            except redis.RedisError:
                continue
            if addr:
                return int(addr[1])
        return None

    def wait_for_replica_known(self, timeout_s: float = 20.0) -> None:
        """Until every sentinel lists the replica (needed before a failover can happen)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            known = 0
            for sentinel in self.sentinels:
                client = redis.Redis(port=sentinel.port, socket_timeout=1)
                try:
                    replicas = client.execute_command(  # type: ignore[no-untyped-call]
                        "SENTINEL", "replicas", SERVICE
                    )
                finally:
                    client.close()
                known += bool(replicas)
            if known == len(self.sentinels):
                return
            time.sleep(0.2)
        raise TimeoutError("sentinels never saw the replica")

    def wait_for_new_master(self, old_port: int, timeout_s: float = 30.0) -> float:
        """Block until the sentinels name a master other than ``old_port``; return when."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            port = self.master_port()
            if port is not None and port != old_port:
                return time.monotonic()
            time.sleep(0.1)
        raise TimeoutError("the sentinels elected no new master")

    def stop(self) -> None:
        """Stop every process (sentinels first, so they do not react to the others)."""
        for proc in [*self.sentinels, self.replica, self.master]:
            proc.kill()


def start_sentinel_set() -> SentinelSet:
    """Master + replica + 3 sentinels, ready for a failover."""
    master = start_redis()
    started: list[ManagedProcess] = [master]
    try:
        replica = start_replica(master.port)
        started.append(replica)
        sentinels = []
        for _ in range(3):
            sentinels.append(start_sentinel(master.port))
            started.append(sentinels[-1])
        topology = SentinelSet(master, replica, sentinels)
        topology.wait_for_replica_known()
        return topology
    except BaseException:
        for proc in started:
            proc.kill()
        raise


# -- Redis Cluster ------------------------------------------------------------------------------


def start_cluster_node(*, node_timeout_ms: int = 2000) -> ManagedProcess:
    """One empty cluster-enabled redis-server (no persistence), not yet part of a cluster."""
    port = free_port()
    # Its own free port for the cluster bus (the default, port + 10000, may be taken or above
    # 65535 for an ephemeral port). Neither is bound until the server starts, so two picks in a
    # row can return the same port: the server then cannot bind its bus and exits.
    bus_port = free_port()
    while bus_port == port:
        bus_port = free_port()
    workdir = tempfile.mkdtemp(prefix="lp-cluster-")
    return start_redis(
        port,
        workdir=workdir,
        extra_args=[
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(Path(workdir) / "nodes.conf"),
            "--cluster-node-timeout",
            str(node_timeout_ms),
            "--cluster-port",
            str(bus_port),
        ],
        name="redis-cluster-node",
    )


@dataclass
class Cluster:
    """Cluster-enabled redis-servers that together serve all 16384 slots (masters, and with
    ``start_cluster(replicas=1)`` one replica per master)."""

    nodes: list[ManagedProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The proxy's ``REDIS_URL`` for this cluster (every node as a startup node)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def client(self) -> redis.RedisCluster:
        """A synchronous cluster client (for checks from tests)."""
        port = self.alive()[0].port
        return redis.RedisCluster(host="127.0.0.1", port=port, socket_timeout=2)

    def alive(self) -> list[ManagedProcess]:
        """The nodes whose process still runs (a test may have killed some)."""
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def _ask(self, port: int, *command: str) -> Any:
        """One command to the node on ``port``; None if it does not answer."""
        try:
            client = redis.Redis(port=port, socket_timeout=1)
            try:
                return client.execute_command(*command)  # type: ignore[no-untyped-call]
            finally:
                client.close()
        except redis.RedisError:
            return None

    def _info_field(self, port: int, command: tuple[str, ...], name: str) -> str:
        info = self._ask(port, *command)
        if isinstance(info, dict):  # redis-py parses INFO (not CLUSTER INFO) into a dict
            return str(info.get(name, ""))
        text = info.decode() if isinstance(info, bytes) else str(info or "")
        for line in text.splitlines():
            if line.startswith(name + ":"):
                return line.partition(":")[2].strip()
        return ""

    def state(self, port: int) -> str:
        """``cluster_state`` as the node on ``port`` reports it ('' if it does not answer)."""
        return self._info_field(port, ("CLUSTER", "INFO"), "cluster_state")

    def role(self, port: int) -> str:
        """``master`` or ``slave`` (a replica) as the node on ``port`` says ('' if down)."""
        return self._info_field(port, ("INFO", "replication"), "role")

    def masters(self) -> list[ManagedProcess]:
        """The running nodes that are masters now."""
        return [n for n in self.alive() if self.role(n.port) == "master"]

    def replicas(self) -> list[ManagedProcess]:
        """The running nodes that are replicas now."""
        return [n for n in self.alive() if self.role(n.port) == "slave"]

    def master_port_of_slot(self, slot: int, *, asking: int | None = None) -> int | None:
        """The port of the master serving ``slot``, as the node on ``asking`` (default: the
        first running node) sees it in ``CLUSTER SLOTS``; None if no node answers."""
        port = asking if asking is not None else self.alive()[0].port
        ranges = self._ask(port, "CLUSTER", "SLOTS")
        for start, end, master, *_ in ranges or []:
            if int(start) <= slot <= int(end):
                return int(master[1])
        return None

    def node(self, port: int) -> ManagedProcess:
        """The node listening on ``port``."""
        return next(n for n in self.nodes if n.port == port)

    def wait_ok(self, timeout_s: float = 20.0) -> None:
        """Until every running node says ``cluster_state:ok`` (all slots served, all agree)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self.state(n.port) == "ok" for n in self.alive()):
                return
            time.sleep(0.1)
        raise TimeoutError("the cluster never reached cluster_state:ok")

    def wait_replicas_synced(self, timeout_s: float = 20.0) -> None:
        """Until every replica's link to its master is up (its first sync finished)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            links = [
                self._info_field(n.port, ("INFO", "replication"), "master_link_status")
                for n in self.replicas()
            ]
            if all(link == "up" for link in links):
                return
            time.sleep(0.1)
        raise TimeoutError("the replicas never finished their first sync")

    def wait_for_failover(self, slot: int, old_port: int, timeout_s: float = 20.0) -> float:
        """Until every running node names a master other than ``old_port`` for ``slot`` and
        says ``cluster_state:ok``; returns ``time.monotonic()`` then."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            alive = self.alive()
            seen = {self.master_port_of_slot(slot, asking=n.port) for n in alive}
            agreed = None not in seen and old_port not in seen and len(seen) == 1
            if agreed and all(self.state(n.port) == "ok" for n in alive):
                return time.monotonic()
            time.sleep(0.05)
        raise TimeoutError(f"no replica took over slot {slot} from the master on {old_port}")

    def stop(self) -> None:
        """Stop every node."""
        for proc in self.nodes:
            proc.kill()


def start_cluster(masters: int = 3, *, replicas: int = 0, node_timeout_ms: int = 2000) -> Cluster:
    """``masters`` cluster-enabled redis-servers on loopback, each with ``replicas`` replicas,
    joined by ``redis-cli --cluster create ... --cluster-replicas <replicas>``, once every node
    reports ``cluster_state:ok`` and every replica has synced. ``node_timeout_ms`` is how long
    a master may be unreachable before its replica is promoted."""
    cli = shutil.which("redis-cli")
    if cli is None:
        raise RuntimeError("redis-cli is not installed (apt-get install redis-tools)")
    topology = Cluster()
    try:
        for _ in range(masters * (1 + replicas)):
            topology.nodes.append(start_cluster_node(node_timeout_ms=node_timeout_ms))
        addresses = [f"127.0.0.1:{n.port}" for n in topology.nodes]
        argv = [cli, "--cluster", "create", *addresses]
        argv += ["--cluster-replicas", str(replicas), "--cluster-yes"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")
        topology.wait_ok()
        if replicas:
            topology.wait_replicas_synced()
            topology.wait_ok()
        return topology
    except BaseException:
        topology.stop()
        raise
