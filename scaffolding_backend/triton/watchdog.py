"""Ends a model process whose event loop has stopped, so that it heals instead of hanging.

Why a model process can stop for good: in the Python backend (``pb_response_iterator.cc``
and ``pb_stub.cc``, the same from release r24.10 to the main line of July 2026), three
threads of a stub that reads streamed decoupled BLS responses while it starts new BLS
requests can wait on each other:

* a thread reading a response iterator (``ResponseIterator::Next``) wakes with the
  iterator's mutex held and waits for the GIL;
* the thread that takes the server's messages (``ProcessBLSResponseDecoupled``) holds the
  iterators' map mutex and waits for that iterator's mutex, to queue its next response;
* a thread whose BLS request has just had its first response
  (``Stub::GetResponseIterator``, run with the GIL held) waits for the map mutex.

Nothing in the process runs again: not one response reaches it, every request in it waits
until its client gives up, and so does every later one. Python code cannot get out of it
(every Python thread needs the GIL), so this watchdog does not try: the model's event loop
re-arms a timer of ``faulthandler``, whose own thread needs no GIL; when the loop has not
run for ``stall_s``, that thread writes every thread's stack to stderr (the server's log)
and ends the process with status 1. The Python backend then fails the requests that
process held, and the launcher's supervisor reloads the model (a request/response one) or
restarts the server (a decoupled one, whose streams Triton would never end); Triton 2.51
itself never starts a stub again.
"""

from __future__ import annotations

import asyncio
import faulthandler
import threading


class LoopWatchdog:
    """``start`` from the model's running event loop (again is a no-op); ``stop`` before the
    model is unloaded. ``stall_s`` 0 turns it off."""

    # re-arm this many times per stall_s, so that a loop merely slowed never comes close
    BEATS_PER_STALL = 4

    def __init__(self, stall_s: float):
        self.stall_s = stall_s
        self._lock = threading.Lock()  # a beat and stop never interleave
        self._started = False
        self._stopped = False

    def start(self) -> None:
        if self.stall_s > 0 and not self._started:
            self._started = True
            self._beat()

    def _beat(self) -> None:
        with self._lock:
            if self._stopped:
                return
            # replaces the previous timer (faulthandler keeps one per process)
            faulthandler.dump_traceback_later(self.stall_s, exit=True)
        asyncio.get_running_loop().call_later(self.stall_s / self.BEATS_PER_STALL, self._beat)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._started:
                faulthandler.cancel_dump_traceback_later()
