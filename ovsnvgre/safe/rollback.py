"""`up --confirm`'s timer, `ovsnvgre confirm` and `ovsnvgre rollback`.

Each takes the host's lock (safe/lock.py) for what it changes; the timer is
started with ``python -I`` from ``/``, so root never imports code from the
directory it was started in, and it proves it is alive with an flock of its own.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ovsnvgre.errors import SystemFailure
from ovsnvgre.ovsdb import Switch, default_remote
from ovsnvgre.progress import Progress, quiet
from ovsnvgre.safe import journal
from ovsnvgre.safe.lock import DEFAULT_WAIT, HostLock, Liveness
from ovsnvgre.safe.restore import left_behind, restore_record
from ovsnvgre.safe.timer import CONFIRMED, ROLLED_BACK, ROLLED_BACK_ON_REQUEST


def start_timer(path: Path, record: journal.Record, seconds: float) -> subprocess.Popen:
    """A detached process that rolls the run back unless `ovsnvgre confirm` comes first
    within ``seconds``.

    It runs in its own session and ignores SIGHUP, so it outlives the shell (and the
    SSH connection) that ran `up`; it logs beside the rollback file.  Its proof of
    life is claimed here, before the record says it awaits confirmation, and handed
    to it.  Raises SystemFailure when the record cannot be saved.
    """
    liveness = Liveness(journal.timer_path(path))
    fd = liveness.claim()
    record.state = journal.AWAITING
    record.deadline = time.time() + seconds
    record.token = secrets.token_hex(8)
    try:
        journal.save(path, record)
        log_fd = os.open(journal.log_path(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT
                         | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(log_fd, "a") as log:
            timer = subprocess.Popen(  # noqa: S603 - a fixed argv, no shell, no user-supplied program
                [sys.executable, "-I", "-m", "ovsnvgre.safe.timer", str(path), record.token,
                 str(fd)], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True, pass_fds=(fd,), cwd="/")
    except BaseException:
        liveness.drop()
        raise
    liveness.hand_over(timer.pid)
    return timer


@dataclass(frozen=True)
class Confirmation:
    """How `up --confirm` ended: kept (confirmed) or rolled back, in words."""

    confirmed: bool
    detail: str


def await_confirmation(timer: subprocess.Popen, seconds: float, left: str = "") -> Confirmation:
    """Wait for the timer of ``up --confirm``: it ends on `ovsnvgre confirm`, `ovsnvgre
    rollback` or its deadline (``seconds``, plus 120 s for the rollback).  ``left``: what
    a rollback does not restore (restore.left_behind), said after it.  Raises
    SystemFailure when the rollback failed."""
    code = timer.wait(timeout=seconds + 120)
    if code == CONFIRMED:
        return Confirmation(True, "confirmed: the change stays")
    if code == ROLLED_BACK:
        return Confirmation(False, "not confirmed in time: rolled back to the state before "
                                   f"the run{left}")
    if code == ROLLED_BACK_ON_REQUEST:
        return Confirmation(False, "rolled back by `ovsnvgre rollback` to the state before "
                                   f"the run{left}")
    raise SystemFailure("not confirmed in time, and the rollback failed: see "
                        "ovsnvgre-rollback.log in the OVS run directory, then run "
                        "`ovsnvgre rollback`")


def confirm(db: str | None = None, wait: float = DEFAULT_WAIT) -> str:
    """Keep what a run changed: drop its rollback state (and so stop its timer).

    Returns a sentence for the user; raises SystemFailure when there is nothing to
    confirm, the rollback already started, or another run holds the host longer
    than ``wait`` seconds.
    """
    path = journal.path_for(db or default_remote())
    with HostLock(path.parent, "confirm", wait):
        record = journal.load(path)
        if record is None:
            if journal.load(journal.taken_path(path)) is not None:
                raise SystemFailure("too late: the rollback has already started")
            raise SystemFailure(f"nothing to confirm: no rollback state in {path}")
        journal.remove(path)
    return f"confirmed {record.title()}: the change stays"


def _ask_timer(path: Path, record: journal.Record, timer: int, progress: Progress) -> str:
    """Have the live confirmation timer ``timer`` roll back now, and wait for it.

    Only a pid the timer wrote itself is signalled: while its parent still starts it,
    the proof of life names no pid (0) yet, and this waits for one.
    """
    deadline = time.monotonic() + 5
    while timer == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
        timer = journal.timer_pid(path) or 0
    if timer > 0:
        progress(f"asking the confirmation timer (pid {timer}) to roll back now")
        os.kill(timer, signal.SIGUSR1)
    deadline = time.monotonic() + 120
    while journal.timer_pid(path) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    if path.exists() or journal.taken_path(path).exists():
        raise SystemFailure(f"the rollback failed: see {journal.log_path(path)}")
    return _said(f"rolled back {record.title()}", record)


def _said(sentence: str, record: journal.Record) -> str:
    """``sentence``, or a SystemFailure (exit 1) that says what the rollback could not
    restore: the host is not as it was before the run."""
    left = left_behind(record)
    if left:
        raise SystemFailure(sentence + left)
    return sentence


def rollback(db: str | None = None, progress: Progress = quiet,
             wait: float = DEFAULT_WAIT) -> str:
    """Return the host to the state saved before the last unfinished or unconfirmed run
    (also one whose own rollback died half-way).

    Returns a sentence for the user; raises SystemFailure when there is nothing to
    roll back, another run holds the host longer than ``wait`` seconds, or restoring
    fails (the state is then kept for the next attempt).
    """
    path = journal.path_for(db or default_remote())
    record = journal.load(path)
    timer = journal.timer_pid(path)
    if record is not None and record.state == journal.AWAITING and timer is not None:
        # The timer owns this rollback (and takes the lock for it): ask it.
        return _ask_timer(path, record, timer, progress)
    with HostLock(path.parent, "rollback", wait, progress):
        journal.recover_taken(path)
        record = journal.load(path)
        if record is None:
            raise SystemFailure(f"nothing to roll back: no rollback state in {path}")
        taken = journal.taken_path(path)
        os.rename(path, taken)
        try:
            with Switch(record.db) as switch:
                undone = restore_record(switch, record, progress)
        except BaseException:
            os.rename(taken, path)
            raise
        journal.remove(taken)
    return _said(f"rolled back {record.title()}: {undone} changes undone", record)
