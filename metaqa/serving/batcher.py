"""Micro-batching for a reader service: concurrent requests that arrive within `max_wait_ms` of
the first one are answered by one batched forward (up to `max_batch` questions), on one worker
thread, so a burst costs one pass instead of N and requests never run two models at once.

One question alone is answered the moment it arrives when nothing else is waiting; the wait is
only paid while another batch is running anyway, or by requests that arrive together.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

from metaqa.data.records import QARecord
from metaqa.evaluation.postprocess import SpanPrediction

log = logging.getLogger(__name__)


@dataclass
class BatchStats:
    requests: int = 0
    batches: int = 0
    errors: int = 0
    sizes: Counter = field(default_factory=Counter)  # batch size → how many batches

    def as_dict(self) -> dict:
        return {"requests": self.requests, "batches": self.batches, "errors": self.errors,
                "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())}}


class MicroBatcher:
    """`await batcher.answer(record)`: the record joins the next batch; `answer_batch(records)`
    (a reader's batched `predict`) runs on a single worker thread."""

    def __init__(self, answer_batch: Callable[[Sequence[QARecord]], list[SpanPrediction]],
                 max_batch: int = 8, max_wait_ms: float = 5.0) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch={max_batch}, max_wait_ms={max_wait_ms}: pass max_batch >= 1, max_wait_ms >= 0")
        self.answer_batch, self.max_batch, self.max_wait = answer_batch, int(max_batch), max_wait_ms / 1000
        self.stats = BatchStats()
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reader")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=True)

    async def answer(self, record: QARecord) -> SpanPrediction:
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not awaited")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((record, future))
        return await future

    async def run_exclusive(self, fn: Callable, *args):
        """Run `fn(*args)` on the reader's worker thread (e.g. a retrieve-then-read answer), so it
        never overlaps a batch."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                timeout = deadline - time.monotonic()
                if timeout <= 0 and self._queue.empty():
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), max(timeout, 0)))
                except asyncio.TimeoutError:
                    break
            records = [r for r, _ in batch]
            self.stats.requests += len(batch)
            self.stats.batches += 1
            self.stats.sizes[len(batch)] += 1
            try:
                predictions = await loop.run_in_executor(self._pool, self.answer_batch, records)
            except Exception as err:  # one bad batch answers its requests with the error, the worker lives on
                self.stats.errors += len(batch)
                log.exception("reader failed on a batch of %d", len(batch))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            for (_, future), prediction in zip(batch, predictions):
                if not future.done():  # the client may have gone away
                    future.set_result(prediction)
