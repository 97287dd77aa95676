"""A small in-memory event log that server-sent-event streams can follow.

Each event gets an increasing id, so a reconnecting browser (EventSource sends Last-Event-ID)
continues where it left off instead of missing or repeating progress.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any


class EventLog:
    def __init__(self, keep: int = 500) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=keep)
        # Ids keep increasing across app restarts, so a browser's Last-Event-ID from before a
        # restart never hides the new events.
        self._next_id = int(time.time() * 1000)
        self._changed = asyncio.Event()

    def publish(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"id": self._next_id, "ts": time.time(), "kind": kind, **fields}
        self._next_id += 1
        self._events.append(event)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return event

    async def wait_for_change(self, timeout: float) -> None:
        """Return at the next published event, or after `timeout` seconds."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            pass

    def since(self, last_id: int) -> list[dict[str, Any]]:
        return [e for e in self._events if e["id"] > last_id]

    def recent(self, n: int) -> list[dict[str, Any]]:
        return list(self._events)[-n:]

    async def follow(self, last_id: int | None, *, backlog: int = 50, lifetime_s: float = 300.0,
                     heartbeat_s: float = 15.0) -> AsyncIterator[str]:
        """SSE text: the backlog (or what came after last_id), then new events as they happen.
        Ends after `lifetime_s` (the client reconnects with Last-Event-ID) so shutdown never waits."""
        ends_at = time.monotonic() + lifetime_s
        pending = self.since(last_id) if last_id is not None else self.recent(backlog)
        yield "retry: 1000\n\n"
        while True:
            for event in pending:
                last_id = event["id"]
                yield f"id: {event['id']}\nevent: {event['kind']}\ndata: {json.dumps(event)}\n\n"
            remaining = ends_at - time.monotonic()
            if remaining <= 0:
                return
            waiter = self._changed
            try:
                await asyncio.wait_for(waiter.wait(), timeout=min(heartbeat_s, remaining))
            except (asyncio.TimeoutError, TimeoutError):
                yield ": keep-alive\n\n"
            pending = self.since(last_id or 0)
