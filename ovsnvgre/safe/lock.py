"""One run at a time per host: an flock held for the whole of every run that can change it.

The lock is ``ovsnvgre.lock`` beside the rollback file (the OVS run directory).
Liveness comes from the lock itself: the kernel releases an flock when its holder
dies, however it dies (kill -9, OOM, power cut), so a lock that can be taken means
no run is in progress, whatever files a dead run left behind.  The holder writes
who it is (pid, command, start time) into the file, for the one line a waiting run
shows.  fcntl.flock is used directly, as OVS itself does for its own lock files:
it is the primitive, and a run directory on tmpfs always supports it.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ovsnvgre.errors import SystemFailure
from ovsnvgre.progress import Progress, quiet

LOCK_NAME = "ovsnvgre.lock"
DEFAULT_WAIT = 60.0  # seconds a run waits for another one to finish
POLL = 0.1           # seconds between attempts while waiting




@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a lock: the process and what it runs."""

    pid: int
    command: str
    started: float  # seconds since the epoch

    def describe(self) -> str:
        """``ovsnvgre up` (pid 4242, started 10:01:02)`` as a waiting run says it."""
        when = time.strftime("%H:%M:%S", time.localtime(self.started))
        return f"`ovsnvgre {self.command}` (pid {self.pid}, started {when})"


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise SystemFailure(f"cannot open the lock {path}: {exc.strerror}") from None


def _try(fd: int, kind: int = fcntl.LOCK_EX) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def read_holder(fd: int) -> Holder | None:
    """What the holder wrote into the lock file open as ``fd``; None when unreadable."""
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"null")
        return Holder(int(data["pid"]), str(data["command"]), float(data["started"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None


class HostLock:
    """The host's run lock, as a context manager.

    ``directory``: where the lock lives (the OVS run directory); ``command``: what
    this run is (``up``, ``rollback``), shown to whoever waits; ``wait``: seconds to
    wait for a running holder before SystemFailure.
    """

    def __init__(self, directory: Path, command: str, wait: float = DEFAULT_WAIT,
                 progress: Progress = quiet) -> None:
        self.path = directory / LOCK_NAME
        self.command, self.wait, self.progress = command, wait, progress
        self.fd: int | None = None

    def __enter__(self) -> HostLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, waiting up to ``wait`` seconds; raises SystemFailure."""
        fd = _open(self.path)
        try:
            if not _try(fd):
                other = read_holder(fd)
                who = other.describe() if other else "another ovsnvgre run"
                self.progress(f"waiting up to {self.wait:g} s for {who} to finish")
                deadline = time.monotonic() + self.wait
                while not _try(fd):
                    if time.monotonic() >= deadline:
                        other = read_holder(fd) or other
                        who = other.describe() if other else "another ovsnvgre run"
                        raise SystemFailure(
                            f"{who} is changing this host and did not finish within "
                            f"{self.wait:g} s; try again later (--wait sets how long to wait)")
                    time.sleep(POLL)
            me = {"pid": os.getpid(), "command": self.command, "started": time.time()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def release(self) -> None:
        """Give the lock up (the file stays: removing it would race with a waiter)."""
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = None


class Liveness:
    """A process's proof of life: an flock held on ``path`` for as long as it runs, with
    its pid inside (the confirmation timer has one).

    The parent claims it before it starts the child and hands the locked descriptor
    over (``pass_fds``), so there is no moment at which the child exists, or is about
    to, without the proof.
    """

    def __init__(self, path: Path, fd: int | None = None) -> None:
        self.path = path
        self.fd = fd

    def claim(self) -> int:
        """Hold the proof (in the parent); returns the descriptor to hand to the child.
        Raises SystemFailure when a live process holds it already."""
        fd = _open(self.path)
        if not _try(fd):
            os.close(fd)
            raise SystemFailure(f"{self.path} is held by another live process")
        self.fd = fd
        os.ftruncate(fd, 0)  # alive, pid not known yet: nobody signals it meanwhile
        return fd

    def mark(self, pid: int) -> None:
        """Write ``pid`` as the holder."""
        assert self.fd is not None  # noqa: S101 - an invariant the code above guarantees, not input checking
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(pid).encode(), 0)

    def hand_over(self, pid: int) -> None:
        """In the parent, once the child ``pid`` runs: keep no copy (the child names
        itself: only the holder writes the pid that may be signalled)."""
        del pid
        assert self.fd is not None  # noqa: S101 - an invariant the code above guarantees, not input checking
        os.close(self.fd)
        self.fd = None

    def drop(self) -> None:
        """In the holder, at its end: remove the file, then let the flock go."""
        if self.fd is not None:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            os.close(self.fd)
            self.fd = None


def live_pid(path: Path) -> int | None:
    """The pid of the live process that holds the proof at ``path`` (0 when it is held
    but names no pid yet), or None when no live process holds it.

    Only a process that holds the flock counts: a pid left in a file by a dead
    process (and since reused by another program) is never returned.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if _try(fd, fcntl.LOCK_SH):
            return None
        try:
            return int(os.pread(fd, 32, 0))
        except (OSError, ValueError):
            return 0
    finally:
        os.close(fd)
