"""The explorer's one compute worker: it owns the model and the device; everything else asks it.

Requests become tasks on one queue, run one at a time on one thread (a model on one device is not shared
between threads). A task is known by a key: asking for a key that is queued or running returns the same
future, so a unit asked for by two tabs is computed once. The queue serves the newest request first (its tasks
in the order asked): the page a user opens now goes before the pages they left, whose tasks wait behind it and
run once nothing newer is asked (what they finished is kept); asking again for a queued task moves it up. A
long task can give way: it checks :meth:`Worker.outranked` as it goes and raises :class:`Preempted`, and it
goes back to the queue at its own request's place, to run again once nothing newer waits.
While a task runs it reports events (progress, a filter done, an error) to every subscriber: the server turns
them into server-sent events.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections import Counter
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from ..errors import KernelvizError
from .events import event

__all__ = ["Emit", "Preempted", "Worker"]

Emit = Callable[[dict[str, Any]], None]
_LOG = logging.getLogger("kernelviz.serve")


class Preempted(Exception):  # noqa: N818 (a signal, not an error)
    """Raised by a task that stopped because a newer request waits (:meth:`Worker.outranked`): it is queued again."""


@dataclass
class _Task:
    key: Hashable
    run: Callable[[Emit], Any]
    future: Future
    request: int = 0
    order: int = 0  # its place among its request's tasks


class Worker:
    """One thread, one queue, one model.

    Attributes:
        runs: how many times each key's task has run (a load test checks each unit runs once).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._heap: list[tuple[int, int, _Task | None]] = []  # (-request, order, task): newest request first
        self._rank: dict[Hashable, tuple[int, int]] = {}  # the queued tasks' places; older heap entries are stale
        self._requests = itertools.count(1)
        self._order = itertools.count()
        self._pending: dict[Hashable, Future] = {}
        self._tasks: dict[Hashable, _Task] = {}
        self._listeners: list[Emit] = []
        self._running = 0  # the request of the task running now (0: none)
        self.runs: Counter[Hashable] = Counter()
        self.preemptions: Counter[Hashable] = Counter()
        self._thread = threading.Thread(target=self._loop, name="kernelviz-worker", daemon=True)
        self._thread.start()

    def new_request(self) -> int:
        """A request number, newer than every one before: tasks submitted with it run before older ones."""
        with self._lock:
            return next(self._requests)

    def submit(self, key: Hashable, run: Callable[[Emit], Any], request: int | None = None) -> Future:
        """The future of task ``key``: the one already queued or running, else a new one running ``run(emit)``.

        Args:
            request: the request the task belongs to (:meth:`new_request`; default: a new one). A queued task
                asked for again by a newer request moves up to it.
        """
        with self._lock:
            request = next(self._requests) if request is None else request
            if key in self._pending:
                place = self._rank.get(key)
                if place is not None and request > place[0]:  # queued, and wanted by a newer request
                    self._queue(self._tasks[key], request)
                return self._pending[key]
            future: Future = Future()
            self._pending[key] = future
            self._queue(_Task(key, run, future, request), request)
            return future

    def outranked(self) -> bool:
        """Whether a task of a newer request than the running one's waits (the running task may give way)."""
        with self._lock:
            return any(request > self._running for request, _ in self._rank.values())

    def _queue(self, task: _Task, request: int, order: int | None = None) -> None:
        """Queue ``task`` for ``request``, after the tasks queued so far (``order``: at that place instead)."""
        order = next(self._order) if order is None else order
        task.request, task.order = request, order
        self._rank[task.key] = (request, order)
        self._tasks[task.key] = task
        heapq.heappush(self._heap, (-request, order, task))
        self._ready.notify()

    def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until every task queued so far has run (a no-op task behind all of them, as old as can be)."""
        with self._lock:
            key = ("idle", next(self._order))
        self.submit(key, lambda emit: None, request=0).result(timeout=timeout)

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

    def stop(self, wait: bool = False) -> None:
        """Finish the running task, then stop (queued tasks are dropped); with ``wait``, return once it has."""
        with self._lock:
            heapq.heappush(self._heap, (-(2**62), -1, None))
            self._ready.notify()
        if wait:
            self._thread.join()

    def _next(self) -> _Task | None:
        """The queued task of the newest request (``None``: stop), waiting for one."""
        with self._lock:
            while True:
                while not self._heap:
                    self._ready.wait()
                negative, order, task = heapq.heappop(self._heap)
                if task is None:
                    return None
                if self._rank.get(task.key) == (-negative, order):  # else moved up since: a stale entry
                    del self._rank[task.key]
                    del self._tasks[task.key]
                    return task

    def _loop(self) -> None:
        while True:
            task = self._next()
            if task is None:
                return
            self.runs[task.key] += 1
            self._running = task.request
            try:
                task.future.set_result(task.run(self.emit))
            except Preempted:  # back to the queue at its own place; its future stays pending
                self.preemptions[task.key] += 1
                with self._lock:
                    self._queue(task, task.request, task.order)
                continue
            except KernelvizError as err:
                self.emit(event("error", key=str(task.key), message=str(err)))
                task.future.set_exception(err)
            except Exception as err:  # one failing computation must not bring the server down
                _LOG.exception("task %s failed", task.key)
                message = f"the computation failed: {type(err).__name__}: {err}"
                self.emit(event("error", key=str(task.key), message=message))
                task.future.set_exception(KernelvizError(message))
            finally:
                self._running = 0
            with self._lock:
                self._pending.pop(task.key, None)
