"""The rollback file: a host's state before a run, saved before the run changes anything.

It lives next to the switch's database socket (the OVS run directory), so that
`ovsnvgre rollback` finds it after a crash, and the confirmation timer after the
shell that ran `up --confirm` is gone.  It is removed when a run finishes (or is
confirmed, or rolled back).  Every run that finds one holds the host's lock
(safe/lock.py), so the run that wrote it is over: the new run adopts it (``adopt``)
and returns to its state if the new run's underlay check fails.  Only a record that
awaits `ovsnvgre confirm` with its timer alive makes a run refuse.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ovsnvgre.errors import SystemFailure
from ovsnvgre.ovsdb.remote import rundir
from ovsnvgre.safe import snapshot as snapshots
from ovsnvgre.safe.lock import live_pid

FILE_NAME = "ovsnvgre-rollback.json"
LOG_NAME = "ovsnvgre-rollback.log"
APPLYING = "applying"
AWAITING = "awaiting-confirmation"
# Record.extra's key for the routing domains' namespaces a run began to make, oldest
# first, as [namespace, bridge port or None]: every rollback deletes them (restore.py).
NAMESPACES_MADE = "namespaces_made"
# ... and those it deleted or changed, which no rollback makes again (their names).
NAMESPACES_LEFT = "namespaces_left"


def path_for(remote: str) -> Path:
    """Where the rollback file of the switch at ``remote`` lives: beside the database
    socket for unix: remotes, else in $OVS_RUNDIR."""
    if remote.startswith("unix:"):
        return Path(os.path.abspath(remote[5:])).parent / FILE_NAME
    return Path(rundir()) / FILE_NAME


def taken_path(path: Path) -> Path:
    """Where a rollback in progress moves the file, so that nothing else acts on it."""
    return path.with_name(path.name + ".rolling-back")


@dataclass
class Record:
    """The rollback file's content: which run, by which process, and the state before it."""

    command: str
    fabric: str
    host: str
    db: str
    pid: int
    started: float
    snapshot: snapshots.Snapshot
    state: str = APPLYING
    deadline: float | None = None
    token: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def title(self) -> str:
        """The run in words: command, host, pid and start time."""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"`ovsnvgre {self.command}` of host {self.host} (pid {self.pid}, {when})"

    def describe(self) -> str:
        """The run and where it stands (unfinished, or how long it awaits `confirm`)."""
        text = self.title()
        if self.state == AWAITING and self.deadline is not None:
            left = max(0.0, self.deadline - time.time())
            return f"{text}, waiting for `ovsnvgre confirm` ({left:.0f} s left)"
        return f"{text}, which did not finish"


def save(path: Path, record: Record) -> None:
    """Write ``record`` to ``path`` atomically (temporary file, fsync, rename); raises
    SystemFailure when it cannot."""
    # Not asdict(record): it would deep-copy the snapshot's thousands of rows and
    # flows (~0.2 s at fabric scale) only for to_dict to replace the copy.
    data = {f.name: getattr(record, f.name) for f in fields(record) if f.name != "snapshot"}
    data["snapshot"] = snapshots.to_dict(record.snapshot)
    data["format"] = snapshots.FORMAT
    text = json.dumps(data)
    try:
        # A name nobody can plant a link at (mkstemp: O_EXCL, unpredictable).
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        raise SystemFailure(f"cannot save the rollback state to {path}: {exc.strerror}; "
                            "nothing was changed") from None


def load(path: Path) -> Record | None:
    """The record at ``path``, None when there is none; SystemFailure when damaged."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SystemFailure(f"{path}: the rollback state cannot be read ({exc})") from None
    try:
        data.pop("format", None)
        data["snapshot"] = snapshots.from_dict(data["snapshot"])
        return Record(**data)
    except (KeyError, TypeError, ValueError) as exc:
        raise SystemFailure(f"{path}: the rollback state is damaged ({exc})") from None


def remove(path: Path) -> None:
    """Remove the file at ``path`` if it is there."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def timer_path(path: Path) -> Path:
    """The confirmation timer's proof of life (an flock with its pid) for ``path``."""
    return path.with_name(path.name + ".timer")


def timer_pid(path: Path) -> int | None:
    """The pid of the live confirmation timer of ``path`` (0: alive, pid not yet
    written), or None when no timer runs."""
    return live_pid(timer_path(path))


def recover_taken(path: Path) -> None:
    """Put back a rollback state that a dead rollback left moved aside.

    Called with the host's lock held: nobody is rolling back, so a ``.rolling-back``
    file belongs to a rollback that died; it is pending again, as before that rollback.
    """
    taken = taken_path(path)
    if not taken.exists():
        return
    if path.exists():
        remove(taken)  # a newer record took its place: it describes the older state too
    else:
        os.rename(taken, path)


def adopt(path: Path, command: str) -> Record | None:
    """The rollback state a run that died left at ``path``, taken over by this run.

    Called with the host's lock held.  Returns None when there is none; the record,
    now naming this process, when its run is over (killed, crashed, or awaiting a
    confirmation whose timer is gone).  Raises SystemFailure when a confirmation
    timer is alive: that run is not over until `confirm` or `rollback`.
    """
    recover_taken(path)
    record = load(path)
    if record is None:
        return None
    if record.state == AWAITING and timer_pid(path) is not None:
        raise SystemFailure(f"{record.describe()}: run `ovsnvgre confirm` to keep it or "
                            "`ovsnvgre rollback` to undo it first")
    record.command, record.pid, record.started = command, os.getpid(), time.time()
    record.state, record.deadline, record.token = APPLYING, None, ""
    save(path, record)
    return record


def log_path(path: Path) -> Path:
    """Where the confirmation timer of ``path`` logs."""
    return path.with_name(LOG_NAME)
