"""The prediction queue of ``refinemask serve``: a fixed number of upload slots and one worker.

Memory and CPU are bounded by construction, not by a lock that an unbounded number of request
handlers wait on:

* an upload takes one of ``slots`` places *before* its body is read, and keeps it until its
  answer is sent; when every place is taken the server answers 503 with ``Retry-After`` at
  once. So at most ``slots`` upload bodies are in memory at a time.
* one worker thread decodes the upload and runs the model, one upload at a time (torch
  already uses every core), so at most one decoded float image and one forward pass exist.

The worker is a daemon thread: at shutdown :meth:`PredictionQueue.close` drops the waiting
uploads, gives the running one a few seconds, and otherwise abandons it (a forward pass cannot
be interrupted), so that the process can exit whatever the model is doing.
"""
from __future__ import annotations

import asyncio
import math
import queue
import threading
from collections.abc import Callable


class QueueClosed(Exception):
    """The server is stopping: the upload was not run."""


class PredictionQueue:
    """``slots`` places for uploads; ``run(data)`` is called for each, in order, on one thread.

    Args:
        run: bytes of an upload -> the JSON answer; called on the worker thread only.
        slots: uploads held at once (being received, waiting or running), at least 1.
    """

    def __init__(self, run: Callable[[bytes], dict], slots: int):
        if slots < 1:
            raise ValueError(f"the queue needs at least one slot, got {slots}")
        self.slots = slots
        self._run = run
        self._taken = 0
        self._lock = threading.Lock()
        self._jobs: queue.Queue = queue.Queue()  # never longer than `slots`: admit() bounds it
        self._closed = False
        self.last_seconds = 1.0  # how long the last upload took, for Retry-After
        self.completed = 0
        self._worker = threading.Thread(target=self._work, name="refinemask-predict", daemon=True)
        self._worker.start()

    def admit(self) -> bool:
        """Take a place for an upload; False when all are taken (answer 503). Pair with :meth:`release`."""
        with self._lock:
            if self._closed or self._taken >= self.slots:
                return False
            self._taken += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._taken -= 1

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the queue's length times the last upload's time."""
        return max(1, math.ceil(self.last_seconds * self.slots))

    async def run(self, data: bytes) -> dict:
        """The answer for ``data``, computed on the worker; raises what ``run`` raised, or :class:`QueueClosed`."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._jobs.put((data, loop, future))
        return await future

    def _work(self) -> None:
        import time

        while True:
            job = self._jobs.get()
            if job is None:
                return
            data, loop, future = job
            if future.cancelled():  # the request was cancelled while it waited (shutdown)
                continue
            start = time.perf_counter()
            try:
                outcome, value = "result", self._run(data)
            except BaseException as err:  # noqa: BLE001 - handed to the request, which answers it
                outcome, value = "error", err
            self.last_seconds = time.perf_counter() - start
            self.completed += 1
            try:
                loop.call_soon_threadsafe(_settle, future, outcome, value)
            except RuntimeError:  # the event loop has closed: the server stopped meanwhile
                pass

    def close(self, timeout: float) -> bool:
        """Stop taking uploads, drop the waiting ones, wait up to ``timeout`` s for the running one.

        Returns True when the worker has ended, False when a prediction was still running and
        is abandoned (the caller exits regardless; the worker is a daemon thread).
        """
        with self._lock:
            self._closed = True
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                _, loop, future = job
                try:
                    loop.call_soon_threadsafe(_settle, future, "error", QueueClosed())
                except RuntimeError:
                    pass
        self._jobs.put(None)
        self._worker.join(timeout)
        return not self._worker.is_alive()


def _settle(future: asyncio.Future, outcome: str, value) -> None:
    if future.done():  # cancelled by the server's shutdown deadline
        return
    if outcome == "result":
        future.set_result(value)
    else:
        future.set_exception(value)
