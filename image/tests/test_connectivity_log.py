"""The connectivity log: transitions, uptime, bounded history, atomic and forgiving file handling."""

from __future__ import annotations

import json
import os

from app.connectivity import ConnectivityLog, write_atomically


def test_transitions_and_uptime(tmp_path):
    log = ConnectivityLog(tmp_path / "c.json", max_events=100)
    assert log.record("spark1", True, latency_ms=3.0, reason=None, now=100.0)
    assert not log.record("spark1", True, latency_ms=3.0, reason=None, now=130.0)
    assert log.record("spark1", False, latency_ms=None, reason="connection refused", now=160.0)
    assert log.record("spark1", True, latency_ms=2.0, reason=None, now=170.0)
    s = log.summary()["nodes"]["spark1"]
    # up 100->160 (60 s), down 160->170 (10 s)
    assert s["uptime_ratio"] == 60 / 70
    assert s["state"] == "up" and s["since"] == 170.0 and s["failures"] == 1 and s["checks"] == 4
    states = [(e["state"], e["reason"]) for e in log.summary()["transitions"]]
    assert states == [("up", None), ("down", "connection refused"), ("up", None)]


def test_history_is_bounded(tmp_path):
    log = ConnectivityLog(tmp_path / "c.json", max_events=10)
    for i in range(50):
        log.record("spark1", i % 2 == 0, latency_ms=None, reason="x", now=float(i))
    assert len(log.events) == 10 and log.events[-1]["ts"] == 49.0


def test_save_and_load_round_trip_into_a_missing_directory(tmp_path):
    path = tmp_path / "not" / "yet" / "c.json"
    log = ConnectivityLog(path, max_events=10)
    log.record("spark2", False, latency_ms=None, reason="timed out", now=5.0)
    log.save(force=True)
    again = ConnectivityLog(path, max_events=10)
    again.load()
    assert again.summary()["nodes"]["spark2"]["reason"] == "timed out"
    assert again.log_problem is None


def test_missing_file_starts_empty(tmp_path):
    log = ConnectivityLog(tmp_path / "absent" / "c.json", max_events=10)
    log.load()
    assert log.summary()["nodes"] == {} and log.log_problem is None


def test_corrupt_file_is_moved_aside_not_fatal(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"version": 1, "nodes": {')  # cut off mid-write by an older tool
    log = ConnectivityLog(path, max_events=10)
    log.load()
    assert log.summary()["nodes"] == {}
    assert "unreadable" in log.log_problem
    assert not path.exists() and list(tmp_path.glob("c.json.unreadable-*"))


def test_unwritable_location_is_reported_not_raised(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    log = ConnectivityLog(blocker / "c.json", max_events=10)  # parent is a file: cannot be created
    log.record("spark1", True, latency_ms=1.0, reason=None)
    log.save(force=True)
    assert log.log_problem and log.log_problem.startswith("cannot write")


def test_write_atomically_leaves_no_temp_files(tmp_path):
    path = tmp_path / "c.json"
    write_atomically(path, json.dumps({"a": 1}))
    write_atomically(path, json.dumps({"a": 2}))
    assert json.loads(path.read_text()) == {"a": 2}
    assert os.listdir(tmp_path) == ["c.json"]


def test_configured_nodes_are_listed_before_their_first_probe(tmp_path):
    log = ConnectivityLog(tmp_path / "c.json", max_events=10)
    log.record("spark1", True, latency_ms=2.0, reason=None, now=1.0)
    log.record("old-node", True, latency_ms=2.0, reason=None, now=1.0)  # since removed from the config
    nodes = log.summary(["spark1", "spark2"])["nodes"]
    assert list(nodes) == ["spark1", "spark2"]
    assert nodes["spark1"]["state"] == "up"
    assert nodes["spark2"]["state"] == "unknown" and nodes["spark2"]["checks"] == 0
    assert nodes["spark2"]["uptime_ratio"] is None and nodes["spark2"]["reason"] == "not checked yet"


async def test_a_hanging_node_does_not_hold_back_the_others(tmp_path):
    import asyncio

    from app.connectivity import ConnectivityMonitor

    release = asyncio.Event()

    async def probe(name):
        if name == "spark2":
            await release.wait()  # a blackholed node: no answer until its timeout
            return False, None, "no answer within 5 s"
        return True, 1.5, None

    monitor = ConnectivityMonitor(ConnectivityLog(tmp_path / "c.json", max_events=10),
                                  ["spark1", "spark2"], probe, interval_s=3)
    round_ = asyncio.create_task(monitor.probe_all())
    for _ in range(50):
        await asyncio.sleep(0.01)
        if monitor.summary()["nodes"]["spark1"]["state"] == "up":
            break
    nodes = monitor.summary()["nodes"]
    assert nodes["spark1"]["state"] == "up" and nodes["spark2"]["state"] == "unknown"
    release.set()
    await round_
    assert monitor.summary()["nodes"]["spark2"]["state"] == "down"
    assert monitor.summary()["interval_s"] == 3
