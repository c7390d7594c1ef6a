"""Drives one controller per request on asyncio.

The runtime dispatches yielded tasks to workers by tag, runs parallel branches
concurrently, derives a replayable seed for every sampled task, enforces the
request's deadline and sub-request budget, stops outstanding work when the
request is cancelled, and keeps the :class:`Account` of what the request cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .account import Account, Status
from .controller import EventKind, Outcome, Parallel, Process, Progress, Settle
from .tasks import GenerationTask, Task

TaskDone = Callable[[Task], None]


class Worker(Protocol):
    async def run(self, tasks: list[Task], on_done: TaskDone) -> int:
        """Fill in the tasks' results, calling ``on_done(task)`` as each one finishes;
        return how many sub-requests that took."""


@dataclass(frozen=True)
class Limits:
    deadline_s: float | None = None
    max_tasks: int | None = None  # generation + reward tasks one request may issue


STOP_GRACE_S = 2.0  # how long stopped tasks may take to end before they are abandoned


class WorkerError(RuntimeError):
    """A failure a worker reports in words meant for the client. ``client_error``: the
    engine refused the request's own input (too long a question, say), not a fault of the
    server."""

    def __init__(self, message: str, *, client_error: bool = False):
        super().__init__(message)
        self.client_error = client_error


class RequestFailed(Exception):
    """The request could not finish; ``reason`` says why, ``client_error`` whose fault."""

    def __init__(
        self, reason: Status, message: str, account: Account, *, client_error: bool = False
    ):
        super().__init__(message)
        self.reason = reason
        self.account = account
        self.client_error = client_error


async def _wait(future: asyncio.Future, timeout: float | None = None) -> None:
    await asyncio.wait([future], timeout=timeout)


def derive_seed(request_seed: int, path: tuple[int, ...], counter: int) -> int:
    """A seed that depends only on where the task sits in the controller's program,
    never on scheduling, so a request replays exactly."""
    key = f"{request_seed}/{'.'.join(map(str, path))}/{counter}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


class _Branch:
    def __init__(self, path: tuple[int, ...]):
        self.path = path
        self.sampled_tasks = 0


@dataclass
class _Run:
    """What every branch of one request shares."""

    account: Account
    limits: Limits
    on_progress: Callable[[Progress], None] | None
    stream_tokens: bool

    def progress(self, event: Progress) -> None:
        if self.on_progress is not None:
            self.on_progress(event)

    def stream(self, task: GenerationTask) -> None:
        """Forward the task's new text as ``tokens`` events, then to its own ``on_chunk``."""
        label, inner = task.stream_as, task.on_chunk

        def on_chunk(chunk_task: GenerationTask, text: str, log_probs: list[float]) -> bool:
            if text:
                self.progress(Progress(EventKind.TOKENS, {"stream": label, "text": text}))
            return inner(chunk_task, text, log_probs) if inner is not None else False

        task.on_chunk = on_chunk


class Runtime:
    def __init__(self, workers: dict[str, Worker]):
        self.workers = workers

    async def run(
        self,
        process: Process,
        *,
        method: str,
        seed: int,
        limits: Limits = Limits(),
        on_progress: Callable[[Progress], None] | None = None,
        stream_tokens: bool = False,
    ) -> Account:
        """Run ``process`` to its outcome. ``on_progress`` gets the controller's events and,
        with ``stream_tokens``, the text of every task it labelled ``stream_as`` as the
        engine writes it (``tokens`` events)."""
        account = Account(method=method, seed=seed)
        started = time.perf_counter()
        run = _Run(account, limits, on_progress, stream_tokens and on_progress is not None)
        drive = self._drive(process, _Branch(()), run)
        try:
            account.outcome = await asyncio.wait_for(drive, timeout=limits.deadline_s)
            account.status = Status.OK
        except asyncio.TimeoutError:
            account.status = Status.DEADLINE
            raise RequestFailed(
                Status.DEADLINE, f"request exceeded its deadline of {limits.deadline_s} s", account
            ) from None
        except asyncio.CancelledError:
            account.status = Status.CANCELLED
            raise RequestFailed(Status.CANCELLED, "request was cancelled", account) from None
        except RequestFailed as failure:
            account.status = failure.reason
            raise
        finally:
            account.wall_seconds = time.perf_counter() - started
        return account

    async def _drive(self, process: Process, branch: _Branch, run: _Run) -> Outcome:
        reply: Any = None
        while True:
            try:
                item = process.send(reply)
            except StopIteration as finished:
                return finished.value
            if isinstance(item, Progress):
                run.progress(item)
                reply = None
            elif isinstance(item, Parallel):
                branches = [
                    self._drive(sub, _Branch((*branch.path, index)), run)
                    for index, sub in enumerate(item.branches)
                ]
                reply = await asyncio.gather(*branches)
            elif isinstance(item, list):
                await self._run_tasks(item, branch, run)
                reply = item
            elif isinstance(item, Settle):
                await self._run_tasks(list(item.tasks), branch, run, item.settled)
                reply = item.tasks
            else:
                raise TypeError(
                    f"a controller yielded {type(item).__name__}; "
                    "expected a task list, Settle, Parallel or Progress"
                )

    @staticmethod
    async def _until_done_or_settled(
        run: asyncio.Future, settling: asyncio.Event, started: list[int]
    ) -> list[int]:
        """The workers' sub-request counts once they are done. Once the controller's rule is
        settled, stopped tasks get STOP_GRACE_S to end (an engine that can stop reports what
        it wrote); workers still busy after that are cancelled, and each of their tasks
        counts as one sub-request."""
        settled = asyncio.ensure_future(settling.wait())
        try:
            await asyncio.wait([run, settled], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            run.cancel()
            # the workers' own cancellation runs to its end before the request reports
            # itself cancelled; its outcome (a cancelled gather ends with CancelledError as
            # its exception) is read here, or asyncio logs it as never retrieved
            await _wait(run)
            if not run.cancelled():
                run.exception()
            raise
        finally:
            settled.cancel()
        if not run.done():
            await _wait(run, STOP_GRACE_S)
        if not run.done():
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
            return started
        return list(run.result())

    async def _run_tasks(
        self,
        tasks: list[Task],
        branch: _Branch,
        run: _Run,
        settled: Callable[[list[Task]], bool] | None = None,
    ) -> None:
        account, limits = run.account, run.limits
        for task in tasks:
            if isinstance(task, GenerationTask) and task.sampled and task.seed is None:
                task.seed = derive_seed(account.seed, branch.path, branch.sampled_tasks)
                branch.sampled_tasks += 1
            if isinstance(task, GenerationTask) and settled is not None:
                task.foldable = False
            if (
                isinstance(task, GenerationTask)
                and task.stream_as is not None
                and run.stream_tokens
            ):
                run.stream(task)
        by_tag: dict[str, list[Task]] = defaultdict(list)
        for task in tasks:
            if task.worker_tag not in self.workers:
                raise RequestFailed(
                    Status.WORKER, f"no worker serves tasks tagged '{task.worker_tag}'", account
                )
            by_tag[task.worker_tag].append(task)
        if limits.max_tasks is not None and account.tasks + len(tasks) > limits.max_tasks:
            raise RequestFailed(
                Status.BUDGET,
                f"request needs more than its budget of {limits.max_tasks} tasks "
                f"({account.tasks} used, {len(tasks)} more asked)",
                account,
            )
        account.tasks += len(tasks)

        finished: list[Task] = []
        settling = asyncio.Event()

        def on_done(task: Task) -> None:
            task.finished = True
            finished.append(task)
            event = task.on_done(task) if task.on_done is not None else None
            if event is not None:
                run.progress(event)
            if settled is not None and not settling.is_set() and settled(finished):
                settling.set()
                for other in tasks:
                    other.request_stop()

        started = time.perf_counter()
        working = asyncio.ensure_future(
            asyncio.gather(
                *(self.workers[tag].run(group, on_done) for tag, group in by_tag.items())
            )
        )
        try:
            counts = await self._until_done_or_settled(
                working, settling, [len(group) for group in by_tag.values()]
            )
        except RequestFailed:
            raise
        except WorkerError as error:  # a worker's failure fails this request, not the server
            raise RequestFailed(
                Status.WORKER, str(error), account, client_error=error.client_error
            ) from error
        except Exception as error:  # a bug: the server's log has the traceback
            raise RequestFailed(Status.WORKER, "a worker failed unexpectedly", account) from error
        for tag, count in zip(by_tag, counts):
            account.sub_requests[tag] += count
        account.record_tasks(tasks)
        account.stopped_tasks += sum(task.stop_requested for task in tasks)
        phase = "+".join(sorted({task.phase for task in tasks}))
        account.phase_seconds[phase] += time.perf_counter() - started
