"""Bounded analysis work: a fixed number of analysis slots per process, a bounded number of
requests admitted to wait for one, and a time budget per request.

`AnalysisGate` (ASGI middleware) admits an analysis request before its body is read, or
answers 503 with Retry-After when the slots and the queue are full; it answers 503 too when
an admitted request is not answered within its budget. `WorkQueue.slot()` holds one slot
around the analysis itself, waiting for one at most until the request's deadline. An analysis
cannot be interrupted: one answered at its deadline goes on in its slot, and is still counted
in the queue, until it finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import threading
import time
from collections.abc import Iterator, MutableMapping
from contextvars import ContextVar
from typing import Any

from facesphere.errors import ServiceError
from facesphere.serve.limits import (
    ASGIApp,
    Message,
    Receive,
    Send,
    retry_after_header,
    send_json,
)

log = logging.getLogger("facesphere.serve")

# POST paths that analyse images: detect, embed, verify, identify (and their batch forms) and
# enroll.
ANALYSIS_PATH = re.compile(
    r"/v1/((detect|embed)(/batch)?|verify"
    r"|galleries/[^/]+/(identify(/batch)?|subjects/[^/]+/faces))"
)

# The monotonic deadline of the request being served (set by AnalysisGate).
_DEADLINE: ContextVar[float | None] = ContextVar("facesphere_serve_deadline", default=None)


class ServiceBusyError(ServiceError):
    """The service cannot take the request now; retry after `retry_after` seconds."""

    http_status = 503

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class WorkQueue:
    """At most `slots` analyses at once, and at most `queue_size` more analysis requests
    admitted to wait; each request gets `budget_s` seconds from its admission.

    `admit` and `leave` run on the event loop only; `slot` in the threads of the endpoints.
    """

    def __init__(self, slots: int, queue_size: int, budget_s: float) -> None:
        self.slots = int(slots)
        self.queue_size = int(queue_size)
        self.budget_s = float(budget_s)
        self.admitted = 0
        self._free = threading.BoundedSemaphore(self.slots)
        self._mean_s = 1.0  # running mean of an analysis' duration, for Retry-After
        self._mean_lock = threading.Lock()

    @property
    def capacity(self) -> int:
        """Analysis requests admitted at once (running and waiting)."""
        return self.slots + self.queue_size

    def admit(self) -> bool:
        """Count one more analysis request in, unless the slots and the queue are full."""
        if self.admitted >= self.capacity:
            return False
        self.admitted += 1
        return True

    def leave(self) -> None:
        """Count an admitted request out (it was answered and its analysis is over)."""
        self.admitted -= 1

    def retry_after(self) -> int:
        """Seconds a refused client should wait: about the time the slots take to work
        through the requests admitted ahead of it (1 to the budget)."""
        ahead = max(0, self.admitted - self.slots) + 1
        seconds = math.ceil(self._mean_s * ahead / self.slots)
        return max(1, min(seconds, math.ceil(self.budget_s)))

    def check_deadline(self) -> None:
        """ServiceBusyError once the request's deadline has passed: a batch checks it between
        its images, so that work nobody waits for any more stops."""
        deadline = _DEADLINE.get()
        if deadline is not None and time.monotonic() >= deadline:
            raise ServiceBusyError(
                f"not done within the request budget of {self.budget_s:g} s; retry later",
                self.retry_after(),
            )

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold an analysis slot, waiting for one until the request's deadline
        (ServiceBusyError then)."""
        deadline = _DEADLINE.get()
        wait = self.budget_s if deadline is None else deadline - time.monotonic()
        got = wait > 0 and self._free.acquire(timeout=wait)
        if got and deadline is not None and time.monotonic() >= deadline:
            # a waiter woken late (a loaded machine) may take a slot freed after its deadline:
            # its request was answered 503 already, so its analysis must not run
            self._free.release()
            got = False
        if not got:
            raise ServiceBusyError(
                f"no analysis slot of {self.slots} came free within the request budget of "
                f"{self.budget_s:g} s; retry later",
                self.retry_after(),
            )
        started = time.monotonic()
        try:
            yield
        finally:
            self._free.release()
            with self._mean_lock:
                self._mean_s += 0.2 * (time.monotonic() - started - self._mean_s)


class AnalysisGate:
    """Admit POST requests to analysis paths into `work` before reading their body (503 with
    Retry-After when full), and answer 503 with Retry-After to one not answered within the
    budget. Other requests pass untouched."""

    def __init__(self, app: ASGIApp, work: WorkQueue) -> None:
        self.app = app
        self.work = work
        self._running: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not ANALYSIS_PATH.fullmatch(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        work = self.work
        if not work.admit():
            await send_json(
                send,
                503,
                f"the service is busy: {work.slots} analyses running and {work.queue_size} "
                "waiting; retry later",
                retry_after_header(work.retry_after()),
            )
            return
        answer = {"started": False, "abandoned": False}

        async def guarded_send(message: Message) -> None:
            if answer["abandoned"]:
                return  # answered at the deadline already
            if message["type"] == "http.response.start":
                answer["started"] = True
            await send(message)

        token = _DEADLINE.set(time.monotonic() + work.budget_s)
        try:  # the task runs in a copy of this context, deadline included
            task = asyncio.ensure_future(self.app(scope, receive, guarded_send))
        finally:
            _DEADLINE.reset(token)
        self._running.add(task)
        task.add_done_callback(self._finished)
        try:
            await asyncio.wait_for(asyncio.shield(task), work.budget_s)
        except asyncio.TimeoutError:
            if answer["started"]:
                await task  # answering already: let it finish
                return
            answer["abandoned"] = True
            log.warning(
                "%s %s: not answered within %g s; answered 503 (a running analysis goes on)",
                scope["method"],
                scope["path"],
                work.budget_s,
            )
            await send_json(
                send,
                503,
                f"not answered within the request budget of {work.budget_s:g} s; retry later",
                retry_after_header(work.retry_after()),
            )

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self.work.leave()
        if not task.cancelled():
            task.exception()  # seen: raised to the server, or logged by the error handlers
