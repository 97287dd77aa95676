"""kill -9 in the middle of writes: the connectivity log and the redaction map are intact and
readable after a restart, and nothing that was acknowledged is lost."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import IMAGE_DIR

pytestmark = pytest.mark.integration  # real processes: after the unit tests
WRITER = Path(__file__).resolve().parent / "crash_writer.py"
KILLS = 12


def write_then_kill(kind: str, path: Path, start: int, rng: random.Random) -> int:
    """Start a writer at `start`, let it write for a random moment, kill -9 it. Returns the last
    number it acknowledged (start - 1 if none)."""
    proc = subprocess.Popen([sys.executable, str(WRITER), kind, str(path), str(start)], cwd=IMAGE_DIR,
                            stdout=subprocess.PIPE, text=True, env={"PYTHONPATH": str(IMAGE_DIR), "PATH": "/usr/bin:/bin"})
    acked = [start - 1]

    def read():
        for line in proc.stdout:
            acked.append(int(line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while acked[-1] < start + 3:  # past start-up: the kill lands among writes
        assert proc.poll() is None, f"the {kind} writer died on its own"
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.3))
    proc.send_signal(signal.SIGKILL)
    proc.wait(5)
    reader.join(5)
    return acked[-1]


@pytest.fixture
def rng():
    seed = random.randrange(10**6)
    print(f"\nkill timing seed {seed}")
    return random.Random(seed)


def test_connectivity_log_survives_kill_9_mid_write(tmp_path, rng):
    from app.connectivity import ConnectivityLog

    path = tmp_path / "connectivity.json"
    next_start = 0
    for _ in range(KILLS):
        last_acked = write_then_kill("connectivity", path, next_start, rng)
        log = ConnectivityLog(path, max_events=500)
        log.load()
        assert log.log_problem is None, log.log_problem  # parsed, not moved aside
        assert not list(tmp_path.glob("connectivity.json.unreadable-*"))
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "temp files of killed writes removed"
        checks = log.nodes["spark1"]["checks"]
        # Every acknowledged probe is in the file (one more may be, if the kill came after the rename).
        assert checks in (last_acked + 1, last_acked + 2), (checks, last_acked)
        next_start = checks


def test_redaction_map_survives_kill_9_mid_write(tmp_path, rng):
    from app.redaction.store import RedactionStore, load_key

    from crash_writer import KEY

    path = tmp_path / "redaction_maps.db"
    next_start = 0
    for _ in range(KILLS):
        last_acked = write_then_kill("redaction", path, next_start, rng)
        assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone() == ("ok",)
        store = RedactionStore(path, load_key(KEY, path.with_suffix(".key")), ttl_s=3600)
        try:
            table = store.table("crash-test")
            restored = set(table.originals.values())
        finally:
            store.close()
        wanted = {f"user{i}@example.com" for i in range(last_acked + 1)}
        assert wanted <= restored, f"lost after kill -9: {sorted(wanted - restored)[:5]}"
        next_start = last_acked + 1
