"""The explorer's one compute worker: it owns the model and the device; everything else asks it.

Requests become tasks on one queue, run one at a time on one thread (a model on one device is not shared
between threads). A task is known by a key: asking for a key that is queued or running returns the same
future, so a unit asked for by two tabs is computed once. While a task runs it reports events (progress,
a filter done, an error) to every subscriber: the server turns them into server-sent events.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from ..errors import KernelvizError

__all__ = ["Emit", "Worker"]

Emit = Callable[[dict[str, Any]], None]
_LOG = logging.getLogger("kernelviz.serve")


@dataclass
class _Task:
    key: Hashable
    run: Callable[[Emit], Any]
    future: Future


class Worker:
    """One thread, one queue, one model.

    Attributes:
        runs: how many times each key's task has run (a load test checks each unit runs once).
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[_Task | None] = queue.Queue()
        self._pending: dict[Hashable, Future] = {}
        self._lock = threading.Lock()
        self._listeners: list[Emit] = []
        self.runs: Counter[Hashable] = Counter()
        self._thread = threading.Thread(target=self._loop, name="kernelviz-worker", daemon=True)
        self._thread.start()

    def submit(self, key: Hashable, run: Callable[[Emit], Any]) -> Future:
        """The future of task ``key``: the one already queued or running, else a new one running ``run(emit)``."""
        with self._lock:
            if key in self._pending:
                return self._pending[key]
            future: Future = Future()
            self._pending[key] = future
            self._queue.put(_Task(key, run, future))
            return future

    def pending(self, key: Hashable) -> Future | None:
        """The future of ``key`` when it is queued or running."""
        with self._lock:
            return self._pending.get(key)

    def subscribe(self, listener: Emit) -> None:
        """Call ``listener(event)`` for every event from now on (from the worker thread)."""
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Emit) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def emit(self, event: dict[str, Any]) -> None:
        """Send ``event`` to every subscriber; a failing subscriber is dropped, never the worker."""
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # a closed client must not stop the computation
                self.unsubscribe(listener)

    def stop(self) -> None:
        """Finish the running task, then stop (queued tasks are dropped)."""
        self._queue.put(None)

    def _loop(self) -> None:
        while True:
            task = self._queue.get()
            if task is None:
                return
            self.runs[task.key] += 1
            try:
                task.future.set_result(task.run(self.emit))
            except KernelvizError as err:
                self.emit({"type": "error", "key": str(task.key), "message": str(err)})
                task.future.set_exception(err)
            except Exception as err:  # one failing computation must not bring the server down
                _LOG.exception("task %s failed", task.key)
                message = f"the computation failed: {type(err).__name__}: {err}"
                self.emit({"type": "error", "key": str(task.key), "message": message})
                task.future.set_exception(KernelvizError(message))
            finally:
                with self._lock:
                    self._pending.pop(task.key, None)
