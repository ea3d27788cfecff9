"""The service's scorer: windows of concurrent requests share model calls.

One background thread per model head (the tag logits, or one embedding layer + pool)
runs the one batching loop, `samplecnn.inference.batching.score_messages`, over
messages that request handlers put on a bounded queue. The loop runs a batch as soon as
`max_batch` windows are waiting; a partial batch runs once the oldest waiting window has
waited `max_wait_s` (the message source then yields `IDLE`). Results go back to each
request's asyncio future on its event loop.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from typing import Callable, Hashable

import numpy as np

from samplecnn.inference.batching import IDLE, Scored, score_messages

__all__ = ["HeadScorer", "ScorerError"]

log = logging.getLogger("samplecnn.serve")

_STOP = ("stop",)


class ScorerError(RuntimeError):
    """The model call failed (a bug or a resource problem, not the upload's fault)."""


class HeadScorer:
    """One head's batching thread.

    `compute`: float32 `(B, window)` -> `(B, D)`. Handlers call `open(loop)` for a key
    and a future, then `put(...)` the key's messages ("windows" ..., then "done" or
    "error"); the future resolves to the key's `Scored`.
    """

    def __init__(self, name: str, compute: Callable[[np.ndarray], np.ndarray], *,
                 max_batch: int, max_wait_s: float, queue_chunks: int = 256):
        self.name = name
        self.compute = compute
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_s)
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, int(queue_chunks)))
        self._futures: dict[Hashable, tuple[asyncio.AbstractEventLoop, asyncio.Future]] = {}
        self._lock = threading.Lock()
        self._keys = itertools.count()
        self.batches = 0  # model calls made
        self.windows = 0  # windows scored
        self.largest = 0  # the largest model call, in windows
        self._thread = threading.Thread(target=self._run, name=f"samplecnn-scorer-{name}", daemon=True)
        self._thread.start()

    # -- the request side (event loop) -------------------------------------------------
    def open(self) -> tuple[int, asyncio.Future]:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        key = next(self._keys)
        with self._lock:
            self._futures[key] = (loop, fut)
        return key, fut

    async def put(self, msg: tuple, poll_s: float = 0.002) -> None:
        """Put a message, waiting (without blocking the event loop) while the queue is
        full: a long upload's windows enter as fast as the model takes them."""
        while True:
            try:
                self.queue.put_nowait(msg)
                return
            except queue.Full:
                await asyncio.sleep(poll_s)

    def forget(self, key: Hashable) -> None:
        """Drop a key whose request gave up (timeout, disconnect): its windows are not
        scored, and nothing is delivered."""
        with self._lock:
            gone = self._futures.pop(key, None)
        if gone is not None:
            # Never blocks the loop: if the queue is full, the thread drains it soon; the
            # message only frees the batching loop's pending windows of this key.
            threading.Thread(target=self.queue.put, args=(("error", key, "abandoned"),),
                             daemon=True).start()

    def close(self, timeout: float | None = None) -> None:
        """Finish what is queued, then stop the thread."""
        self.queue.put(_STOP)
        self._thread.join(timeout)

    # -- the scoring thread --------------------------------------------------------------
    def _messages(self):
        oldest: float | None = None  # when the oldest window not yet run arrived
        while True:
            if oldest is None:
                msg = self.queue.get()
            else:
                left = oldest + self.max_wait_s - time.monotonic()
                try:
                    msg = self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait()
                except queue.Empty:
                    oldest = None
                    yield IDLE  # run the partial batch now
                    continue
            if msg is _STOP:
                return
            if msg[0] == "windows" and oldest is None:
                oldest = time.monotonic()
            yield msg

    def _counted(self, x: np.ndarray) -> np.ndarray:
        out = self.compute(x)
        self.batches += 1
        self.windows += len(x)
        self.largest = max(self.largest, len(x))
        return out

    def _deliver(self, res: Scored) -> None:
        with self._lock:
            entry = self._futures.pop(res.key, None)
        if entry is None:
            return  # the request gave up
        loop, fut = entry

        def settle() -> None:
            if not fut.done():
                fut.set_result(res)
        try:
            loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop is closed: nobody is waiting
            pass

    def _fail_all(self, err: BaseException) -> None:
        with self._lock:
            entries, self._futures = list(self._futures.values()), {}
        for loop, fut in entries:
            def settle(fut=fut) -> None:
                if not fut.done():
                    fut.set_exception(ScorerError(f"model call failed ({type(err).__name__}: {err})"))
            try:
                loop.call_soon_threadsafe(settle)
            except RuntimeError:
                pass

    def _run(self) -> None:
        messages = self._messages()
        while True:
            try:
                for res in score_messages(messages, self._counted, self.max_batch):
                    self._deliver(res)
                return  # _STOP: everything queued before it was scored and delivered
            except Exception as err:  # a failed model call fails the requests in flight, not the service
                log.error("samplecnn serve: %s scorer: model call failed: %s: %s", self.name,
                          type(err).__name__, err)
                self._fail_all(err)
                messages = self._messages()
