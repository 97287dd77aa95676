"""The SSH pool against real sshd nodes: reuse, concurrency, failures turned into our errors."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

import pytest

from app.errors import ConfigError, NodeTimeout, NodeUnreachable, NotFound, RemoteCommandFailed
from app.settings import Settings
from app.ssh import LocalNode, NodePool, SSHNode, fingerprint_of_public_key

pytestmark = pytest.mark.integration


def settings_for(cluster, **overrides) -> Settings:
    return Settings.from_env(environ=cluster.app_env(), **overrides)


async def test_one_persistent_connection_serves_many_commands(sim_cluster):
    pool = NodePool(settings_for(sim_cluster))
    try:
        node = pool.get("spark1")
        assert isinstance(node, SSHNode)
        first = await node.run("echo $SPARKSIM_NODE_NAME")
        conn = node._conn
        timings = []
        for _ in range(20):
            t = time.perf_counter()
            await node.run("true")
            timings.append(time.perf_counter() - t)
        assert first.stdout.strip() == "spark1"
        assert node._conn is conn, "the pool must reuse its connection, not open one per command"
        timings.sort()
        assert timings[len(timings) // 2] < 0.1, f"median command took {timings[10]*1000:.1f} ms"
    finally:
        await pool.close()


async def test_concurrent_commands_share_the_connection(sim_cluster):
    pool = NodePool(settings_for(sim_cluster))
    try:
        results = await asyncio.gather(*(pool.run("spark2", f"echo {i}") for i in range(40)))
        assert [r.stdout.strip() for r in results] == [str(i) for i in range(40)]
    finally:
        await pool.close()


@asynccontextmanager
async def every_session_taken(cluster):
    """spark2's node with ten open sessions on its connection (sshd's MaxSessions): each printed a
    line and waits on its stdin, so closing one ends its command and frees its slot."""
    pool = NodePool(settings_for(cluster))
    node = pool.get("spark2")
    streams = [node.stream("echo up; read line") for _ in range(10)]
    try:
        for stream in streams:
            assert (await anext(stream)).strip() == "up"
        yield node, streams
    finally:
        for stream in streams:
            await stream.aclose()
        await pool.close()


async def test_a_session_refused_at_max_sessions_is_opened_again_once_one_frees(sim_cluster):
    async with every_session_taken(sim_cluster) as (node, streams):
        async def free_one_soon():
            await asyncio.sleep(0.3)
            await streams.pop().aclose()

        freeing = asyncio.ensure_future(free_one_soon())
        result = await node.run("echo ok")
        assert result.stdout.strip() == "ok"
        await freeing


async def test_a_session_refused_for_good_names_max_sessions(sim_cluster):
    async with every_session_taken(sim_cluster) as (node, _streams):
        t = time.monotonic()
        with pytest.raises(NodeUnreachable, match="MaxSessions"):
            await node.run("echo never")
        assert 1.0 < time.monotonic() - t < 10, "opened again for about 1.5 s, then the error"


async def test_nonzero_exit_is_remote_command_failed_with_stderr(sim_cluster):
    pool = NodePool(settings_for(sim_cluster))
    try:
        with pytest.raises(RemoteCommandFailed) as info:
            await pool.run("spark1", "echo nope >&2; exit 3")
        assert info.value.exit_status == 3 and "nope" in info.value.message and "spark1" in info.value.message
        unchecked = await pool.run("spark1", "exit 4", check=False)
        assert unchecked.exit_status == 4
    finally:
        await pool.close()


async def test_command_timeout_is_node_timeout(sim_cluster):
    pool = NodePool(settings_for(sim_cluster))
    try:
        started = time.monotonic()
        with pytest.raises(NodeTimeout, match="no answer within 0.5 s"):
            await pool.run("spark1", "sleep 5", timeout=0.5)
        assert time.monotonic() - started < 3
    finally:
        await pool.close()


async def test_unknown_node_is_not_found(sim_cluster):
    pool = NodePool(settings_for(sim_cluster))
    with pytest.raises(NotFound, match="spark9.*spark1, spark2"):
        pool.get("spark9")


async def test_unknown_host_key_is_refused_with_fingerprint(sim_cluster, tmp_path):
    # known_hosts that lists spark1 with spark2's key: a man in the middle, as far as we can tell.
    wrong = tmp_path / "known_hosts"
    n1, n2 = sim_cluster.nodes
    wrong.write_text(f"[{n1.address}]:{n1.port} " + " ".join(n2.host_key_line().split()[1:]) + "\n")
    pool = NodePool(settings_for(sim_cluster, ssh_known_hosts=wrong))
    expected_fp = fingerprint_of_public_key(n1.dir / "ssh_host_ed25519_key.pub")
    with pytest.raises(NodeUnreachable) as info:
        await pool.run("spark1", "true")
    message = info.value.message
    assert "not trusted" in message and expected_fp in message and n1.address in message
    await pool.close()


async def test_missing_known_hosts_file_is_a_clear_config_error(sim_cluster, tmp_path):
    pool = NodePool(settings_for(sim_cluster, ssh_known_hosts=tmp_path / "absent"))
    with pytest.raises(ConfigError, match="does not exist.*ssh-keyscan"):
        await pool.run("spark1", "true")


async def test_connection_lost_mid_command_fails_fast_then_reconnects(sim_cluster):
    """A crash while a command runs must not hang: the run fails, and the pool comes back."""
    pool = NodePool(settings_for(sim_cluster, ssh_keepalive_interval_s=1.0))
    node2 = sim_cluster.node("spark2")
    try:
        await pool.run("spark2", "true")
        long_running = asyncio.create_task(pool.run("spark2", "sleep 30", timeout=25))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        node2.crash()
        with pytest.raises(NodeUnreachable):
            await long_running
        assert time.monotonic() - started < 10
        assert (await pool.run("spark1", "echo alive")).stdout.strip() == "alive"
        node2.revive()
        deadline = time.monotonic() + 15
        while True:
            try:
                assert (await pool.run("spark2", "echo back")).stdout.strip() == "back"
                break
            except NodeUnreachable:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)
    finally:
        if node2.proc is None:
            node2.revive()
        await pool.close()


async def test_refused_connection_backs_off_with_the_reason(tmp_path):
    env = {"SPARK1_HOST": "127.0.0.9", "SPARK1_PORT": "1", "SPARK1_USER": "nobody",
           "SSH_KNOWN_HOSTS": str(tmp_path / "kh")}
    (tmp_path / "kh").write_text("")
    pool = NodePool(Settings.from_env(environ=env))
    with pytest.raises(NodeUnreachable, match="cannot connect to nobody@127.0.0.9:1") as first:
        await pool.run("spark1", "true")
    started = time.monotonic()
    with pytest.raises(NodeUnreachable) as again:
        await pool.run("spark1", "true")
    assert time.monotonic() - started < 0.5, "while backing off, answer at once"
    assert again.value.message == first.value.message, "the same reason, not a new connect attempt"


async def test_no_nodes_configured_means_this_machine(tmp_path):
    settings = Settings.from_env(environ={"USER": "someone"})
    pool = NodePool(settings)
    node = pool.get("spark1")
    assert isinstance(node, LocalNode)
    assert (await node.run("echo local")).stdout == "local\n"
    with pytest.raises(RemoteCommandFailed):
        await node.run("false")
