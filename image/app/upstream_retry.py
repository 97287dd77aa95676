"""One request, several replicas: send it to the first that takes the connection.

Shared by the gateways (app/llm_proxy.py over its own upstream client, app/audio_proxy.py over
httpx). Only a failed *connect* moves on to the next replica: nothing reached that server, so
the request cannot have run twice. A timeout or a broken answer after the request was sent is
never retried, since the model may be running it. Each move is counted in
`spark_control_upstream_retries_total{model, upstream}` (the replica that refused).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import httpx
from prometheus_client import Counter

from app.upstream_http import ConnectError, ConnectTimeout

# What a refused, unroutable or silent connect raises in either client; all happen before a byte is sent.
CONNECT_FAILURES: tuple[type[BaseException], ...] = (ConnectError, ConnectTimeout, httpx.ConnectError,
                                                     httpx.ConnectTimeout)

Candidate = TypeVar("Candidate")
Answer = TypeVar("Answer")


async def first_that_connects(candidates: Sequence[Candidate], send: Callable[[Candidate], Awaitable[Answer]], *,
                              retries: Counter, labels: Callable[[Candidate], tuple[str, str]],
                              on_connect_failure: Callable[[Candidate], None] | None = None,
                              ) -> tuple[Candidate, Answer]:
    """(the candidate that answered, what `send` returned). The last connect failure is raised
    as it is, for the caller's 502 (see `tried`). `retries` is the metrics' retries counter,
    `labels` gives its (model, upstream) labels for a candidate; `on_connect_failure` hears of
    every refused candidate (e.g. to stop trusting a cached health answer)."""
    if not candidates:
        raise ValueError("no candidates to send the request to")
    for attempt, candidate in enumerate(candidates):
        try:
            return candidate, await send(candidate)
        except CONNECT_FAILURES:
            if on_connect_failure is not None:
                on_connect_failure(candidate)
            if attempt + 1 == len(candidates):
                raise
            retries.labels(*labels(candidate)).inc()
    raise AssertionError("unreachable")


def tried(base_urls: Sequence[str]) -> str:
    """Where the request went, for the 502 when none took it: every address when there were several."""
    return base_urls[0] if len(base_urls) == 1 else f"{', '.join(base_urls)} (every replica tried)"
