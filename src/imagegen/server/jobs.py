"""Jobs: generation off the event loop, one job per model at a time, a bounded queue per model, progress
and cancellation.

Each run has one worker thread and a queue of at most ``max_queue`` waiting jobs; a job past that is refused
at once with :class:`Busy` (the API answers 429 with one line), so a burst of requests never piles up
unbounded work or memory. A job's progress is the number of network operations (convolutions, matrix products,
attention) run so far, against the count the same request took last time when there was one. They are
counted by a ``TorchFunctionMode`` (thread-local: it sees only the worker's own torch calls), which also
raises :class:`Cancelled` once the job is cancelled, so a family's sampling loop stops at its next torch
call without the family knowing about jobs. Every family is covered, whether it calls modules or
functional ops (the cached PixelCNN sampler does).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..errors import ImagegenError

log = logging.getLogger("imagegen.server")


class Busy(Exception):
    """The run's queue is full: try again when a job finishes."""


class Cancelled(Exception):
    """Raised inside a running job (from a module hook) after its cancellation was asked for."""


@dataclass
class Job:
    run: int
    kind: str
    fn: Callable[[], dict]  # does the work in the worker thread, returns the result dict
    key: str  # requests with the same key make the same number of network calls (progress estimate)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    status: str = "queued"  # queued | running | done | error | cancelled
    created: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    calls: int = 0
    expected: int | None = None
    error: str | None = None
    result: dict | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    done_event: threading.Event = field(default_factory=threading.Event)

    def progress(self) -> float | None:
        if self.status == "done":
            return 1.0
        if self.status != "running" or not self.expected:
            return None
        return min(0.99, self.calls / self.expected)

    def seconds(self) -> float | None:
        if self.started is None:
            return None
        return (self.finished or time.monotonic()) - self.started


# the operations that make up a network evaluation; counting them (not every elementwise op) keeps the count
# proportional to the work whatever the family's code style
_COUNTED = {torch.conv2d, F.conv2d, F.conv_transpose2d, F.linear, torch.matmul, torch.Tensor.matmul, torch.bmm,
            torch.baddbmm, torch.einsum, F.scaled_dot_product_attention}


class _JobMode(TorchFunctionMode):
    """Counts a job's network operations and stops it when cancelled (at its next torch call)."""

    def __init__(self, job: Job):
        super().__init__()
        self.job = job

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.job.cancel_event.is_set():
            raise Cancelled()
        if func in _COUNTED:
            self.job.calls += 1
        return func(*args, **(kwargs or {}))


class Worker:
    """One thread that runs one run's jobs in order."""

    def __init__(self, run: int, max_queue: int):
        self.run, self.max_queue = run, max_queue
        self.pending: collections.deque[Job] = collections.deque()
        self.current: Job | None = None
        self.calls_by_key: dict[str, int] = {}
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name=f"imagegen-run-{run}", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._cv:
            if self._stop:
                raise Busy(f"run {self.run} is shutting down")
            if len(self.pending) >= self.max_queue:
                raise Busy(f"busy: run {self.run} already has {len(self.pending)} jobs waiting (the limit); "
                           "try again when one finishes")
            job.expected = self.calls_by_key.get(job.key)
            self.pending.append(job)
            self._cv.notify()

    def position(self, job: Job) -> int | None:
        with self._cv:
            try:
                return self.pending.index(job) + 1
            except ValueError:
                return None

    def cancel(self, job: Job) -> None:
        job.cancel_event.set()
        with self._cv:
            if job in self.pending:  # not started: it never will
                self.pending.remove(job)
                job.status, job.finished = "cancelled", time.monotonic()
                job.done_event.set()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self.pending and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                job = self.pending.popleft()
                self.current = job
                job.status, job.started = "running", time.monotonic()
            self._run(job)

    def _run(self, job: Job) -> None:
        try:
            if job.cancel_event.is_set():
                raise Cancelled()
            with _JobMode(job):
                job.result = job.fn()
            job.status = "done"
            self.calls_by_key[job.key] = job.calls
        except Cancelled:
            job.status = "cancelled"
        except ImagegenError as e:  # the user's request, found wrong by the Python API or the family
            job.status, job.error = "error", " ".join(str(e).split())
        except Exception as e:  # a bug: say so in one line, keep the traceback in the server's log
            log.exception("job %s (%s on run %s) failed", job.id, job.kind, job.run)
            job.status, job.error = "error", f"internal error: {type(e).__name__}: {' '.join(str(e).split())}"
        finally:
            job.finished = time.monotonic()
            job.fn = None  # drop the request's tensors
            with self._cv:
                self.current = None
            job.done_event.set()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            for job in self.pending:
                job.status, job.error = "cancelled", "the server is shutting down"
                job.done_event.set()
            self.pending.clear()
            self._cv.notify_all()
            if self.current is not None:
                self.current.cancel_event.set()


class JobManager:
    """Every run's worker, and the jobs by id. Finished jobs are kept (with their images) for
    ``keep_finished`` more jobs, then forgotten, so memory stays flat however long the server runs."""

    def __init__(self, runs: list[int], max_queue: int = 8, keep_finished: int = 64):
        self.workers = {i: Worker(i, max_queue) for i in runs}
        self.keep_finished = keep_finished
        self.jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._lock = threading.Lock()

    def submit(self, run: int, kind: str, fn: Callable[[], dict], key: str) -> Job:
        job = Job(run=run, kind=kind, fn=fn, key=f"{kind}:{key}")
        self.workers[run].submit(job)  # raises Busy before the job is remembered
        with self._lock:
            self.jobs[job.id] = job
            self._forget_old()
        return job

    def _forget_old(self) -> None:
        finished = [j for j in self.jobs.values() if j.done_event.is_set()]
        for j in finished[: max(0, len(finished) - self.keep_finished)]:
            del self.jobs[j.id]

    def get(self, job_id: str) -> Job:
        with self._lock:
            return self.jobs[job_id]  # KeyError: unknown or forgotten

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if not job.done_event.is_set():
            self.workers[job.run].cancel(job)
        return job

    def describe(self, job: Job) -> dict:
        out = {"id": job.id, "run": job.run, "kind": job.kind, "status": job.status,
               "progress": job.progress(), "calls": job.calls, "expected_calls": job.expected,
               "seconds": job.seconds(), "error": job.error}
        if job.status == "queued":
            out["queue_position"] = self.workers[job.run].position(job)
        if job.status == "done":
            out["result"] = job.result["public"]
        return out

    def queued(self) -> dict[int, int]:
        return {i: len(w.pending) + (w.current is not None) for i, w in self.workers.items()}

    def stop(self) -> None:
        for w in self.workers.values():
            w.stop()
