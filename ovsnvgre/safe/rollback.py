"""`up --confirm`'s timer, `ovsnvgre confirm` and `ovsnvgre rollback`."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ovsnvgre.errors import SystemFailure
from ovsnvgre.ovsdb import Switch, default_remote
from ovsnvgre.safe import journal
from ovsnvgre.safe.restore import restore
from ovsnvgre.safe.timer import CONFIRMED, ROLLED_BACK

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def start_timer(path: Path, record: journal.Record, seconds: float) -> subprocess.Popen:
    """A detached process that rolls the run back unless `ovsnvgre confirm` comes first
    within ``seconds``.

    It runs in its own session and ignores SIGHUP, so it outlives the shell (and the
    SSH connection) that ran `up`; it logs beside the rollback file.  Raises
    SystemFailure when the record cannot be saved.
    """
    record.state = journal.AWAITING
    record.deadline = time.time() + seconds
    record.token = secrets.token_hex(8)
    journal.save(path, record)
    log = open(journal.log_path(path), "a")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen([sys.executable, "-m", "ovsnvgre.safe.timer", str(path),
                                 record.token], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                close_fds=True)
    finally:
        log.close()


@dataclass(frozen=True)
class Confirmation:
    """How `up --confirm` ended: kept (confirmed) or rolled back, in words."""

    confirmed: bool
    detail: str


def await_confirmation(timer: subprocess.Popen, seconds: float) -> Confirmation:
    """Wait for the timer of ``up --confirm``: it ends on `ovsnvgre confirm` or its deadline
    (``seconds``, plus 120 s for the rollback).  Raises SystemFailure when the rollback
    failed."""
    code = timer.wait(timeout=seconds + 120)
    if code == CONFIRMED:
        return Confirmation(True, "confirmed: the change stays")
    if code == ROLLED_BACK:
        return Confirmation(False, "not confirmed in time: rolled back to the state before "
                                   "the run")
    raise SystemFailure("not confirmed in time, and the rollback failed: see "
                        "ovsnvgre-rollback.log in the OVS run directory, then run "
                        "`ovsnvgre rollback`")


def confirm(db: str | None = None) -> str:
    """Keep what a run changed: drop its rollback state (and so stop its timer).

    Returns a sentence for the user; raises SystemFailure when there is nothing to
    confirm, the run still applies, or the rollback already started.
    """
    path = journal.path_for(db or default_remote())
    record = journal.load(path)
    if record is None:
        if journal.load(journal.taken_path(path)) is not None:
            raise SystemFailure("too late: the rollback has already started")
        raise SystemFailure(f"nothing to confirm: no rollback state in {path}")
    if record.still_applying():
        raise SystemFailure(f"{record.describe()} is still running; confirm once it has "
                            "finished")
    try:
        path.unlink()
    except FileNotFoundError:
        raise SystemFailure("too late: the rollback has already started") from None
    return f"confirmed {record.title()}: the change stays"


def rollback(db: str | None = None, progress: Progress = _quiet) -> str:
    """Return the host to the state saved before the last unfinished or unconfirmed run.

    Returns a sentence for the user; raises SystemFailure when there is nothing to
    roll back, the run still applies, or restoring fails (the state is then kept).
    """
    path = journal.path_for(db or default_remote())
    record = journal.load(path)
    if record is None:
        raise SystemFailure(f"nothing to roll back: no rollback state in {path}")
    timer = journal.timer_pid(path)
    if record.state == journal.AWAITING and timer is not None:
        # The timer owns this rollback; ask it to do it now and wait for it.
        progress(f"asking the confirmation timer (pid {timer}) to roll back now")
        os.kill(timer, signal.SIGUSR1)
        deadline = time.monotonic() + 120
        while journal.timer_pid(path) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if path.exists() or journal.taken_path(path).exists():
            raise SystemFailure(f"the rollback failed: see {journal.log_path(path)}")
        return f"rolled back {record.title()}"
    if record.still_applying():
        raise SystemFailure(f"{record.describe()} is still running; wait for it to finish")
    taken = journal.taken_path(path)
    try:
        os.rename(path, taken)
    except FileNotFoundError:
        raise SystemFailure("the rollback state disappeared: confirmed or rolled back by "
                            "another command meanwhile") from None
    try:
        with Switch(record.db) as switch:
            undone = restore(switch, record.snapshot, progress)
    except BaseException:
        os.rename(taken, path)
        raise
    journal.remove(taken)
    return f"rolled back {record.title()}: {undone} changes undone"
