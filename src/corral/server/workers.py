"""Several worker processes on one port: the supervisor behind ``corral run --workers N``.

The supervisor serves nothing itself. It reserves the port once (:func:`reserve_port`),
starts N workers that each listen on it with ``SO_REUSEPORT`` (the kernel spreads new
connections between their accept queues), replaces a worker that dies, and on
:meth:`Supervisor.stop` sends SIGTERM to all of them (each closes its WebSockets with 1001),
then SIGKILLs whichever is still there after ``shutdown_timeout``.

Workers are plain subprocesses running ``python -m corral run ...`` rather than
``multiprocessing`` children: a worker then loads the application exactly as a single
``corral run`` does (current directory on ``sys.path``, factories called in the worker),
nothing has to be pickled (routers hold lambdas), and its exit code and signal are the
ordinary ones a restart decision needs. Forking the supervisor instead would copy an event
loop and its threads into the child.

A worker must not outlive its supervisor, however the supervisor ends (SIGKILL included).
Each worker inherits the read end of a pipe whose write end only the supervisor holds; the
kernel closes it when the supervisor dies, and the worker's :func:`watch_supervisor` thread
sees end-of-file and stops the worker gracefully. Unlike Linux's ``PR_SET_PDEATHSIG`` this
works on every POSIX system, cannot miss a supervisor that died before the worker started
watching (the end-of-file is still there), and does not fire when merely the *thread* that
started the worker ends.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from .stats import remove_shared

__all__ = [
    "EXIT_USAGE",
    "SHUTDOWN_TIMEOUT",
    "RestartPolicy",
    "Supervisor",
    "describe_exit",
    "reserve_port",
    "supervise",
    "watch_supervisor",
]

logger = logging.getLogger("corral.server.workers")

# argparse's exit code for bad usage; the CLI uses it for a MODULE:ATTR it cannot serve too.
# A worker exiting with it could not load its application or options: every restart would
# fail the same way, so the supervisor stops instead.
EXIT_USAGE = 2

# A worker's graceful shutdown takes up to the close timeout (10 s) plus a little; past
# this the supervisor (or a worker whose supervisor is gone) stops waiting.
SHUTDOWN_TIMEOUT = 15.0

_BIND_ATTEMPTS = 20  # port 0 on a host with several addresses: tries to find one free on all


# -- the port ----------------------------------------------------------------------------------


def _bind_reserved(infos: Sequence[tuple[int, int, int, tuple[object, ...]]],
                   port: int) -> list[socket.socket]:
    """Bind a SO_REUSEPORT socket to ``port`` on each address; the first one's port (the
    OS's choice when ``port`` is 0) is used for the others."""
    sockets: list[socket.socket] = []
    try:
        for family, type_, proto, address in infos:
            sock = socket.socket(family, type_, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:  # as asyncio's create_server does
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address[0], port, *address[2:]))
            port = int(sock.getsockname()[1])
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


@contextlib.contextmanager
def reserve_port(host: str | None, port: int) -> Iterator[int]:
    """Hold ``port`` (0: one the OS picks) on every address of ``host`` and yield it.

    The sockets are bound with SO_REUSEPORT but never listen, so they take no connections
    while keeping the port for the workers: with port 0 every worker, restarted ones
    included, gets the same port, and no other program can take it between restarts.
    Raises OSError when the port is in use by a socket without SO_REUSEPORT.
    """
    infos = list(dict.fromkeys(
        (family, type_, proto, address)
        for family, type_, proto, _, address in socket.getaddrinfo(
            host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
    ))
    for attempt in range(_BIND_ATTEMPTS):
        try:
            sockets = _bind_reserved(infos, port)
            break
        except OSError:
            # A port the OS chose on the first address may be taken on another: try again.
            if port != 0 or len(infos) == 1 or attempt == _BIND_ATTEMPTS - 1:
                raise
    try:
        yield int(sockets[0].getsockname()[1])
    finally:
        for sock in sockets:
            sock.close()


# -- inside a worker ---------------------------------------------------------------------------


def watch_supervisor(fd: int, grace: float = SHUTDOWN_TIMEOUT) -> threading.Thread:
    """In a worker: stop gracefully (SIGTERM to this process) once ``fd``, the read end of
    the supervisor's pipe, reaches end-of-file, i.e. the supervisor is gone; exit anyway if
    that has not ended the process ``grace`` seconds later."""

    def watch() -> None:
        try:
            while os.read(fd, 256):  # the supervisor never writes: only end-of-file comes
                pass
        except OSError:
            pass
        logger.warning("the supervisor is gone: shutting down")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        os._exit(1)

    thread = threading.Thread(target=watch, name="corral-supervisor-watch", daemon=True)
    thread.start()
    return thread


# -- the supervisor ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How a dead worker is replaced.

    - ``first_delay`` (0.1 s): the wait before a restart; it doubles with each restart
      already made within ``window``, up to ``max_delay`` (5 s), so a crash loop slows
      down instead of spinning.
    - ``max_restarts`` (10) within ``window`` (60 s): one more and the supervisor gives up,
      stops every worker and exits 1: what keeps crashing is not fixed by restarting, and
      the service manager above (systemd, a container runtime) should hear about it.
    """

    first_delay: float = 0.1
    max_delay: float = 5.0
    max_restarts: int = 10
    window: float = 60.0

    def __post_init__(self) -> None:
        if self.first_delay < 0 or self.max_delay < 0 or self.window <= 0:
            raise ValueError("delays must not be negative and the window must be positive")
        if self.max_restarts < 0:
            raise ValueError("max_restarts must not be negative")

    def delay(self, recent: int) -> float:
        """The wait before a restart when ``recent`` restarts happened within the window."""
        return float(min(self.max_delay, self.first_delay * 2 ** min(recent, 32)))


def describe_exit(returncode: int) -> str:
    """``exited with code 3`` or ``was killed by SIGKILL``, for the logs."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"was killed by {name}"


@dataclasses.dataclass(eq=False)
class _Worker:
    slot: int
    process: asyncio.subprocess.Process
    pipe: int  # the write end of the pipe the worker watches (see watch_supervisor)
    exited: asyncio.Task[int]


class Supervisor:
    """Keeps ``count`` workers running until :meth:`stop`.

    ``command(fd, slot)`` gives the argv of worker number ``slot`` (0 to count - 1; a
    restarted worker keeps its number); ``fd`` is the pipe read end it inherits and must
    hand to :func:`watch_supervisor`. Workers go in their own process group, so a Ctrl-C
    in a terminal reaches the supervisor alone and the workers are stopped in order, never
    mistaken for crashed ones. ``stats_dir``: where the workers share their stats
    (:mod:`corral.server.stats`); the file of a worker that exits is removed.
    """

    def __init__(
        self,
        command: Callable[[int, int], Sequence[str]],
        count: int,
        *,
        policy: RestartPolicy | None = None,
        shutdown_timeout: float = SHUTDOWN_TIMEOUT,
        where: str = "",
        stats_dir: str | None = None,
    ) -> None:
        if count < 1:
            raise ValueError("at least one worker is needed")
        self._command = command
        self._count = count
        self._policy = policy or RestartPolicy()
        self._shutdown_timeout = shutdown_timeout
        self._where = where
        self._stats_dir = stats_dir
        self._workers: dict[int, _Worker] = {}
        self._restarts: collections.deque[float] = collections.deque()  # when, loop time
        self._pending: set[asyncio.Task[None]] = set()  # restarts waiting for their delay
        # What the main loop reacts to: a worker that exited, or an exit status to stop with.
        self._events: asyncio.Queue[_Worker | int] = asyncio.Queue()
        self._stopping = False
        self._kill_now = asyncio.Event()  # stop(force=True): no more waiting for workers

    @property
    def pids(self) -> list[int]:
        """The PIDs of the running workers, by slot."""
        return [self._workers[slot].process.pid for slot in sorted(self._workers)]

    def stop(self, *, force: bool = False) -> None:
        """Shut down gracefully and make :meth:`run` return 0. With ``force`` during a
        shutdown already begun, kill the workers still running without waiting longer."""
        if self._stopping:
            if force:
                self._kill_now.set()
            return
        self._stopping = True
        self._events.put_nowait(0)

    async def run(self) -> int:
        """Start the workers and supervise them; return the exit status: 0 after
        :meth:`stop`, 1 after too many restarts, 2 when a worker reported a usage error."""
        try:
            for slot in range(self._count):
                await self._spawn(slot)
            logger.info("corral supervisor (pid %d): %d workers on %s",
                        os.getpid(), self._count, self._where or "their port")
            return await self._supervise()
        finally:
            await self._shutdown()

    async def _spawn(self, slot: int) -> None:
        read_end, write_end = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                *self._command(read_end, slot), pass_fds=(read_end,), process_group=0
            )
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        worker = _Worker(slot, process, write_end, asyncio.create_task(process.wait()))
        worker.exited.add_done_callback(lambda _: self._events.put_nowait(worker))
        self._workers[slot] = worker
        logger.info("worker %d started (pid %d)", slot, process.pid)

    async def _supervise(self) -> int:
        while True:
            event = await self._events.get()
            if isinstance(event, int):
                return event
            del self._workers[event.slot]
            os.close(event.pipe)
            if self._stats_dir is not None:  # its figures are gone with it
                remove_shared(self._stats_dir, event.slot)
            status = self._after_exit(event)
            if status is not None:
                return status

    def _after_exit(self, worker: _Worker) -> int | None:
        """Schedule the restart of a worker that exited; or the status to stop with."""
        returncode = worker.exited.result()
        what = f"worker {worker.slot} (pid {worker.process.pid}) {describe_exit(returncode)}"
        if returncode == EXIT_USAGE:
            logger.error("%s: a usage error, not restarting; stopping", what)
            return EXIT_USAGE
        now = asyncio.get_running_loop().time()
        while self._restarts and now - self._restarts[0] > self._policy.window:
            self._restarts.popleft()
        if len(self._restarts) >= self._policy.max_restarts:
            logger.error("%s: %d restarts within %g s already, giving up; stopping",
                         what, len(self._restarts), self._policy.window)
            return 1
        delay = self._policy.delay(len(self._restarts))
        self._restarts.append(now)
        logger.warning("%s; restarting it in %.2g s", what, delay)
        task = asyncio.create_task(self._restart_later(worker.slot, delay))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return None

    async def _restart_later(self, slot: int, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._stopping:
            return
        try:
            await self._spawn(slot)
        except OSError as exc:  # out of processes or file descriptors, say
            logger.error("cannot restart worker %d: %s; stopping", slot, exc)
            self._events.put_nowait(1)

    async def _shutdown(self) -> None:
        """SIGTERM to every worker, wait up to the shutdown timeout, SIGKILL the rest."""
        self._stopping = True
        pending = list(self._pending)
        for task in pending:
            task.cancel()
        if pending:  # a restart cancelled while starting its process kills that process
            await asyncio.wait(pending)
        workers = list(self._workers.values())
        self._workers.clear()
        if workers:
            logger.info("stopping %d workers", len(workers))
            for worker in workers:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGTERM)
            kill_now = asyncio.create_task(self._kill_now.wait())
            all_exited = asyncio.create_task(asyncio.wait([w.exited for w in workers]))
            await asyncio.wait([kill_now, all_exited], timeout=self._shutdown_timeout,
                               return_when=asyncio.FIRST_COMPLETED)
            kill_now.cancel()
            all_exited.cancel()  # stops only the waiting, not what is waited for
            for worker in workers:
                if not worker.exited.done():
                    logger.warning("worker %d (pid %d) has not stopped: killing it",
                                   worker.slot, worker.process.pid)
                    with contextlib.suppress(ProcessLookupError):
                        worker.process.kill()
            await asyncio.wait([w.exited for w in workers])
        for worker in workers:
            os.close(worker.pipe)


def supervise(
    command: Callable[[int, int], Sequence[str]],
    count: int,
    *,
    policy: RestartPolicy | None = None,
    shutdown_timeout: float = SHUTDOWN_TIMEOUT,
    where: str = "",
    stats_dir: str | None = None,
) -> int:
    """Run a :class:`Supervisor` until SIGINT or SIGTERM; return its exit status.

    A second SIGINT (Ctrl-C again) kills the workers at once; a repeated SIGTERM does not,
    since tools such as ``timeout`` send it to the whole process group as well."""

    async def main() -> int:
        supervisor = Supervisor(command, count, policy=policy, shutdown_timeout=shutdown_timeout,
                                where=where, stats_dir=stats_dir)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, lambda: supervisor.stop(force=True))
        loop.add_signal_handler(signal.SIGTERM, supervisor.stop)
        return await supervisor.run()

    return asyncio.run(main())
