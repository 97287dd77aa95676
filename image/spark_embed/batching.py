"""Micro-batching: concurrent requests share one encode call.

A GPU (or the CPU's vector units) embeds 32 sentences in one pass in little more time than
one, so requests that arrive within `wait_s` of the first one waiting are grouped, up to
`max_items` inputs, and encoded together on one worker thread; each request then gets its
own slice back. While a batch is being encoded the next one gathers in the queue, so under
load batches grow on their own and an idle server adds at most `wait_s` of latency.
A request larger than `max_items` is encoded alone (the encoder chunks it itself).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from spark_embed.encoder import Encoded

log = logging.getLogger("spark_embed")


@dataclass
class _Job:
    texts: list[str]
    future: asyncio.Future


@dataclass
class BatchStats:
    requests: int = 0          # requests encoded
    inputs: int = 0            # inputs (texts) encoded
    tokens: int = 0
    encode_calls: int = 0      # calls into the model: fewer than requests when batching works
    largest_batch_requests: int = 0
    largest_batch_inputs: int = 0
    failures: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class MicroBatcher:
    encode: Callable[[list[str]], Encoded]   # synchronous; runs on the worker thread
    max_items: int = 256
    wait_s: float = 0.005
    stats: BatchStats = field(default_factory=BatchStats)

    def __post_init__(self) -> None:
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._carry: _Job | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode")
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="spark_embed-batcher")

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._executor.shutdown(wait=True, cancel_futures=True)

    @property
    def queued(self) -> int:
        return self._queue.qsize() + (self._carry is not None)

    async def submit(self, texts: list[str]) -> Encoded:
        """Embed `texts` (with whatever else is waiting); raises what the encoder raised."""
        if self._worker is None or self._worker.done():
            raise RuntimeError("the batcher is not running")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(texts, future))
        return await future

    async def _next_batch(self) -> list[_Job]:
        loop = asyncio.get_running_loop()
        first, self._carry = self._carry or await self._queue.get(), None
        batch, items = [first], len(first.texts)
        deadline = loop.time() + self.wait_s
        while items < self.max_items:
            if self._queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                job = self._queue.get_nowait()
            if items + len(job.texts) > self.max_items:
                self._carry = job          # first of the next batch: order is kept
                break
            batch.append(job)
            items += len(job.texts)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [job for job in await self._next_batch() if not job.future.done()]  # gone: cancelled
            if not batch:
                continue
            texts = [text for job in batch for text in job.texts]
            try:
                result = await loop.run_in_executor(self._executor, self.encode, texts)
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the failure
                log.exception("encoding %d inputs failed", len(texts))
                self.stats.failures += 1
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            self._record(batch, texts, result)
            start = 0
            for job in batch:
                end = start + len(job.texts)
                if not job.future.done():
                    job.future.set_result(Encoded(result.vectors[start:end], result.tokens[start:end]))
                start = end

    def _record(self, batch: list[_Job], texts: list[str], result: Encoded) -> None:
        s = self.stats
        s.encode_calls += 1
        s.requests += len(batch)
        s.inputs += len(texts)
        s.tokens += sum(result.tokens)
        s.largest_batch_requests = max(s.largest_batch_requests, len(batch))
        s.largest_batch_inputs = max(s.largest_batch_inputs, len(texts))
        log.debug("encoded %d inputs from %d requests", len(texts), len(batch))
