"""The service object: what the app holds between requests (the tagger, the decoding
processes, the batching threads, the private temporary folder, the admission count) and
the path of one request through them:

1. admission: at most `queue_size` requests are admitted at once (uploading, decoding or
   scoring); one more is answered 503 with `Retry-After` at once, before its body is read;
2. upload: the body is streamed to a private temporary file, counted (413 past the limit,
   without reading the rest), removed on any failure or disconnect (`upload.py`);
3. decoding: in worker processes (`decode.py`), off the event loop, through the tagger's
   own decoding path; a broken file is a 415/422 answer naming the reason;
4. windows: the one feeder (`tagging.sources.window_messages`) on the options' window
   grid, put on the head's bounded queue; the batching thread (`scoring.py`, the one
   batching loop) scores windows of concurrent requests together.

Steps 3-4 run under the request timeout (504). The routes (`routes.py`) turn the result
into answers.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import multiprocessing
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from starlette.requests import Request

from samplecnn.options import ScoringOptions, check_float, check_int
from samplecnn.tagging.sources import window_messages

from . import decode
from .scoring import HeadScorer
from .upload import ApiError, Upload, receive_upload

__all__ = ["Service"]

log = logging.getLogger("samplecnn.serve")

_CHUNK = 16  # windows per message to the batching thread


class Service:
    """What the app holds between requests: the tagger, the decoding processes, the
    batching threads, the private temporary folder and the admission count."""

    def __init__(self, tagger, *, name: str, api_key: str | None, max_upload_mb: float,
                 max_batch: int, max_wait_ms: float, queue_size: int, timeout_s: float,
                 decode_workers: int):
        # The CLI's bounds (commands/serve.py), checked again for Python callers: finite,
        # so `nan` cannot slip through every comparison.
        check_float(max_upload_mb, "max_upload_mb", low=0, high=1 << 20)
        check_float(max_wait_ms, "max_wait_ms", low=0, high=60_000, low_inclusive=True)
        check_float(timeout_s, "timeout_s", low=0, high=86_400)
        for label, value in (("max_batch", max_batch), ("queue_size", queue_size),
                             ("decode_workers", decode_workers)):
            check_int(value, label, low=1)
        if api_key and any(ord(c) < 0x20 or ord(c) == 0x7F for c in api_key):
            raise ValueError("api_key: control characters cannot be sent in an HTTP header")
        self.tagger = tagger
        self.name = name
        self.api_key = api_key or None
        self.max_upload_mb = float(max_upload_mb)
        self.max_bytes = int(max_upload_mb * 2**20)
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_ms) / 1000.0
        self.queue_size = int(queue_size)
        self.timeout_s = float(timeout_s)
        self.decode_workers = int(decode_workers)
        self.admitted = 0
        self.pool: ProcessPoolExecutor | None = None
        self.heads: dict[tuple, HeadScorer] = {}
        self.tmpdir: str | None = None
        self._started = False

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        if self._started:
            return
        self.tmpdir = tempfile.mkdtemp(prefix="samplecnn-serve-")  # mode 0700: ours only
        self.pool = self._new_pool()
        self.head(("tag",))
        self._started = True

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn: workers start clean (no threads, no torch), however many threads this
        # process runs by then; they import only samplecnn.service.decode.
        pool = ProcessPoolExecutor(self.decode_workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=decode.warm_up)
        try:
            for f in [pool.submit(os.getpid) for _ in range(self.decode_workers)]:
                f.result()
        except BrokenProcessPool:
            pool.shutdown(wait=False, cancel_futures=True)
            raise RuntimeError(
                "the decoding worker processes could not start (a script that creates the app "
                "must run it under `if __name__ == \"__main__\":`, as multiprocessing requires)"
            ) from None
        return pool

    def stop(self) -> None:
        """Finish what is queued, stop the threads and the workers, remove the temp folder."""
        if not self._started:
            return
        self._started = False
        for scorer in self.heads.values():
            scorer.close(timeout=60)
        self.heads.clear()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def head(self, spec: tuple) -> HeadScorer:
        scorer = self.heads.get(spec)
        if scorer is None:
            if spec[0] == "tag":
                compute = self.tagger.logits
            else:
                _, layer, pool = spec
                compute = lambda x, layer=layer, pool=pool: self.tagger.embeddings(x, layer, pool)  # noqa: E731
            scorer = self.heads[spec] = HeadScorer("-".join(spec), compute, max_batch=self.max_batch,
                                                   max_wait_s=self.max_wait_s)
        return scorer

    # -- one request -------------------------------------------------------------------------
    def check_key(self, request: Request) -> None:
        if self.api_key is None:
            return
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        # Header values arrive as latin-1 text of the bytes sent: compare those bytes with
        # the key's UTF-8, so that a non-ASCII key typed in a UTF-8 client matches.
        # (strip(" \t") only: str.strip() would also eat a UTF-8 byte 0x85 or 0xa0.)
        sent = token.strip(" \t").encode("latin-1", "replace")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(sent, self.api_key.encode("utf-8"))
        if not ok:
            raise ApiError(401, "missing or wrong API key (send 'Authorization: Bearer KEY')",
                           {"WWW-Authenticate": "Bearer"})

    async def run(self, request: Request, spec: tuple, options: ScoringOptions, filename: str | None):
        """Admit, receive, decode and score one upload on `options`' window grid ->
        `(the upload's name, info, Scored)`."""
        grid = self.tagger.grid(options)
        if not self._started:
            self.start()
        if self.admitted >= self.queue_size:
            raise ApiError(503, f"server busy: {self.queue_size} requests in progress; retry shortly",
                           {"Retry-After": "1"})
        self.admitted += 1
        try:
            upload = await receive_upload(request, self.tmpdir, self.max_bytes, filename)
            try:
                return await asyncio.wait_for(self._score(upload, spec, grid), self.timeout_s)
            except asyncio.TimeoutError:
                raise ApiError(504, f"not finished within the request timeout of {self.timeout_s:g} s") from None
            finally:
                _unlink(upload.path)
        finally:
            self.admitted -= 1

    def _replace_pool(self, broken: ProcessPoolExecutor) -> ProcessPoolExecutor:
        """A worker died (killed, out of memory): the pool is unusable; start a new one
        (once, whoever notices first). Its workers start on the next submit."""
        if self.pool is broken:
            broken.shutdown(wait=False, cancel_futures=True)
            self.pool = ProcessPoolExecutor(self.decode_workers,
                                            mp_context=multiprocessing.get_context("spawn"),
                                            initializer=decode.warm_up)
            log.warning("a decoding process exited unexpectedly; decoding processes restarted")
        return self.pool

    async def _score(self, upload: Upload, spec: tuple, grid):
        dst = upload.path + ".f32"
        pool = self.pool
        try:
            cf = pool.submit(decode.decode_to_file, upload.path, dst, self.tagger.sample_rate)
        except BrokenProcessPool:
            pool = self._replace_pool(pool)
            cf = pool.submit(decode.decode_to_file, upload.path, dst, self.tagger.sample_rate)
        try:
            out = await asyncio.wrap_future(cf)
        except asyncio.CancelledError:
            cf.add_done_callback(lambda _f: _unlink(dst))  # the worker finishes later
            raise
        except BrokenProcessPool:
            _unlink(dst)
            self._replace_pool(pool)
            raise ApiError(500, f"{upload.filename}: the decoding process exited unexpectedly") from None
        if not out["ok"]:
            status = 415 if out["kind"] == "not_audio" else 422
            raise ApiError(status, f"{upload.filename}: {out['reason']}")
        info = out["info"]
        samples = decode.open_decoded(dst)
        _unlink(dst)  # the mapping keeps the data; nothing is left on disk
        scorer = self.head(spec)
        key, fut = scorer.open()
        try:
            # The one feeder, over the decoded samples (at the model's rate already).
            for msg in window_messages(key, samples, self.tagger.sample_rate, grid, chunk=_CHUNK,
                                       source_sample_rate=self.tagger.sample_rate):
                if msg[0] == "done":
                    msg = ("done", key, info)  # the decoder's facts: source rate, warnings
                await scorer.put(msg)
                await asyncio.sleep(0)  # a long file does not hold the event loop
            scored = await fut
        except BaseException:
            scorer.forget(key)
            raise
        finally:
            del samples
        if scored.error is not None:
            raise ApiError(422, f"{upload.filename}: {scored.error}")
        return upload.filename, info, scored


def _unlink(path: str | None) -> None:
    if path:
        try:
            os.unlink(path)
        except OSError:
            pass
