"""Serving the ASGI app over HTTP: one process, or several sharing one listening socket.

One Python process uses one core. `workers > 1` binds the socket once and forks that many
processes, each building its own app (its own pool, group committer and Redis client) and
accepting from the shared socket, so request handling can use every core. The parent only
forwards SIGINT/SIGTERM (as SIGTERM) and waits; if it dies, the kernel kills the workers too, so a killed
server never leaves orphans answering on its port.

Once the app is built, the garbage collector is settled for the work (`infra.collector`): what
exists then is frozen out of its reach, and young collections run less often.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn

from infra import collector

_PR_SET_PDEATHSIG = 1


def serve(make_app: Callable[[int], Any], host: str, port: int, workers: int = 1) -> int:
    """Run until stopped; returns the exit code (non-zero when a worker died on its own).

    `make_app(index)` builds the app of worker `index` (0 for the first or only one)."""
    if workers <= 1:
        app = make_app(0)
        collector.settle()
        uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)
        return 0
    listener = socket.create_server((host, port), backlog=2048)
    children = [_fork_worker(make_app, index, listener) for index in range(workers)]
    listener.close()
    return _supervise(children)


def _fork_worker(make_app: Callable[[int], Any], index: int, listener: socket.socket) -> int:
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        _die_with(parent)
        # A stop that arrives while the app is built is kept and honoured once uvicorn listens.
        stop_requested: list[int] = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda signum, _: stop_requested.append(signum))
        config = uvicorn.Config(make_app(index), log_config=None, access_log=False)
        collector.settle()
        _Worker(config, stop_requested).run(sockets=[listener])
        code = 0
    except BaseException as exc:  # a child must never return into the parent's code
        print(f"server worker {os.getpid()} failed: {exc!r}", file=sys.stderr, flush=True)
    finally:
        sys.stderr.flush()
        os._exit(code)


class _Worker(uvicorn.Server):
    """uvicorn's server, which also stops for a signal received before its own handlers were in place."""

    def __init__(self, config: uvicorn.Config, stop_requested: list[int]) -> None:
        super().__init__(config)
        self._stop_requested = stop_requested

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self._stop_requested:
            self.should_exit = True


def _die_with(parent: int) -> None:
    """Have the kernel SIGKILL this worker when the parent dies (Linux), like a single process would."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _supervise(children: list[int]) -> int:
    """Forward stop signals to the workers; if one exits by itself, stop the others and fail."""
    stopping = False

    def forward(_signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        # As SIGTERM: a Ctrl-C reaches the workers too (one process group), and uvicorn takes a
        # second SIGINT as "exit now", skipping the shutdown that lets group commits finish.
        _signal_all(children, signal.SIGTERM)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    code = 0
    alive = set(children)
    while alive:
        pid, status = os.wait()
        alive.discard(pid)
        if not stopping:
            print(f"server worker {pid} exited (status {status}); stopping the others", file=sys.stderr, flush=True)
            stopping = True
            code = 1
            _signal_all(list(alive), signal.SIGTERM)
    return code


def _signal_all(children: list[int], signum: int) -> None:
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
