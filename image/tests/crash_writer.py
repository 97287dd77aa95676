"""Writes without end, printing what each write made durable, until it is killed (kill -9 in
test_crash_safety.py). Run as: python crash_writer.py connectivity|redaction PATH START"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

KEY = base64.b64encode(b"k" * 32).decode()


def connectivity(path: Path, start: int) -> None:
    from app.connectivity import ConnectivityLog

    log = ConnectivityLog(path, max_events=500)
    log.load()
    for i in range(start, 10**9):
        log.record("spark1", i % 2 == 0, latency_ms=1.0, reason="flapping", now=float(i))
        log.save(force=True)
        print(i, flush=True)  # acknowledged: save() returned


def redaction(path: Path, start: int) -> None:
    from app.redaction.store import Item, RedactionStore, load_key

    store = RedactionStore(path, load_key(KEY, path.with_suffix(".key")), ttl_s=3600)
    for i in range(start, 10**9):
        store.assign("crash-test", [Item("EMAIL", f"user{i}@example.com", f"user{i}@example.com")])
        print(i, flush=True)  # acknowledged: the transaction committed


if __name__ == "__main__":
    {"connectivity": connectivity, "redaction": redaction}[sys.argv[1]](Path(sys.argv[2]), int(sys.argv[3]))
