"""The detached process behind `up --confirm`: roll the run back unless it is confirmed.

    python -I -m ovsnvgre.safe.timer ROLLBACK_FILE TOKEN LIVENESS_FD

Exits 0 when `ovsnvgre confirm` removed the file in time, 3 after rolling the run
back at its deadline, 4 after rolling it back at `ovsnvgre rollback`'s request, 1 when
the rollback failed (the file is then kept for `ovsnvgre rollback`,
or for the next `up`, which adopts it).  SIGUSR1 (sent by `ovsnvgre rollback`)
rolls back at once.  LIVENESS_FD is the locked proof of life its parent claimed.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from pathlib import Path

from ovsnvgre.errors import OvsnvgreError
from ovsnvgre.ovsdb import Switch
from ovsnvgre.safe import journal
from ovsnvgre.safe.lock import HostLock, Liveness
from ovsnvgre.safe.restore import left_behind, restore_record

CONFIRMED, ROLLED_BACK, ROLLED_BACK_ON_REQUEST, FAILED = 0, 3, 4, 1
POLL = 0.1          # seconds between looks at the rollback file
LOCK_WAIT = 600.0   # seconds the rollback waits for a `confirm` or `rollback` in progress


def _log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} ovsnvgre confirm timer (pid {os.getpid()}): {message}", flush=True)


def run(path: Path, token: str) -> int:
    """Wait for `confirm` or the deadline of the record at ``path`` (whose token must be
    ``token``), then roll back; returns CONFIRMED, ROLLED_BACK, ROLLED_BACK_ON_REQUEST or
    FAILED."""
    now = {"requested": False}

    def roll_back_now(*_: object) -> None:
        now["requested"] = True

    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, roll_back_now)
    while True:
        record = journal.load(path)
        if record is None or record.token != token:
            _log("confirmed: nothing rolled back")
            return CONFIRMED
        if now["requested"] or (record.deadline or 0) <= time.time():
            break
        time.sleep(POLL)
    requested = now["requested"]  # a request during the rollback changes nothing
    reason = "by request" if requested else "no confirmation in time"
    with HostLock(path.parent, "rollback (confirmation timer)", LOCK_WAIT, _log):
        record = journal.load(path)
        if record is None or record.token != token:
            _log("confirmed at the last moment: nothing rolled back")
            return CONFIRMED
        taken = journal.taken_path(path)
        os.rename(path, taken)
        _log(f"rolling back {record.describe()}: {reason}")
        code = _roll_back(record, path, taken)
    return ROLLED_BACK_ON_REQUEST if code == ROLLED_BACK and requested else code


def _roll_back(record: journal.Record, path: Path, taken: Path) -> int:
    try:
        with Switch(record.db) as switch:
            undone = restore_record(switch, record, _log)
    except Exception as exc:  # noqa: BLE001 - whatever it is, the state must stay pending
        record.state, record.deadline = journal.APPLYING, None
        journal.save(path, record)
        journal.remove(taken)
        detail = str(exc) if isinstance(exc, OvsnvgreError) else traceback.format_exc()
        _log(f"rollback failed: {detail}; the state is kept in {path} for `ovsnvgre "
             "rollback` (or the next `ovsnvgre up`)")
        return FAILED
    journal.remove(taken)
    _log(f"rolled back: {undone} changes undone{left_behind(record)}")
    return ROLLED_BACK


def main() -> None:
    """The process's entry point: ``ROLLBACK_FILE TOKEN LIVENESS_FD`` on the command line."""
    if len(sys.argv) != 4:
        sys.exit(f"usage: {sys.argv[0]} ROLLBACK_FILE TOKEN LIVENESS_FD")
    path = Path(sys.argv[1])
    liveness = Liveness(journal.timer_path(path), int(sys.argv[3]))
    liveness.mark(os.getpid())
    try:
        code = run(path, sys.argv[2])
    finally:
        liveness.drop()
    sys.exit(code)


if __name__ == "__main__":
    main()
