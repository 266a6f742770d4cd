"""The detached process behind `up --confirm`: roll the run back unless it is confirmed.

    python -m ovsnvgre.safe.timer ROLLBACK_FILE TOKEN

Exits 0 when `ovsnvgre confirm` removed the file in time, 3 after rolling the run
back, 1 when the rollback failed (the file is then kept for `ovsnvgre rollback`).
SIGUSR1 (sent by `ovsnvgre rollback`) rolls back at once.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from ovsnvgre.errors import OvsnvgreError
from ovsnvgre.ovsdb import Switch
from ovsnvgre.safe import journal
from ovsnvgre.safe.restore import restore

CONFIRMED, ROLLED_BACK, FAILED = 0, 3, 1
POLL = 0.1


def _log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} ovsnvgre confirm timer (pid {os.getpid()}): {message}", flush=True)


def run(path: Path, token: str) -> int:
    """Wait for `confirm` or the deadline of the record at ``path`` (whose token must be
    ``token``), then roll back; returns CONFIRMED, ROLLED_BACK or FAILED."""
    now = {"requested": False}

    def roll_back_now(*_: object) -> None:
        now["requested"] = True

    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, roll_back_now)
    pidfile = path.with_name(path.name + ".timer")
    pidfile.write_text(str(os.getpid()))
    try:
        while True:
            record = journal.load(path)
            if record is None or record.token != token:
                _log("confirmed: nothing rolled back")
                return CONFIRMED
            if now["requested"] or (record.deadline or 0) <= time.time():
                break
            time.sleep(POLL)
        taken = journal.taken_path(path)
        try:
            os.rename(path, taken)  # `confirm` removes the same file: one of us wins
        except FileNotFoundError:
            _log("confirmed at the last moment: nothing rolled back")
            return CONFIRMED
        reason = "by request" if now["requested"] else "no confirmation in time"
        _log(f"rolling back {record.describe()}: {reason}")
        return _roll_back(record, path, taken)
    finally:
        pidfile.unlink(missing_ok=True)


def _roll_back(record: journal.Record, path: Path, taken: Path) -> int:
    try:
        with Switch(record.db) as switch:
            undone = restore(switch, record.snapshot, _log)
    except OvsnvgreError as exc:
        record.state, record.deadline = journal.APPLYING, None
        journal.save(path, record)
        journal.remove(taken)
        _log(f"rollback failed: {exc}; the state is kept in {path} for `ovsnvgre rollback`")
        return FAILED
    journal.remove(taken)
    _log(f"rolled back: {undone} changes undone")
    return ROLLED_BACK


def main() -> None:
    """The process's entry point: ``ROLLBACK_FILE TOKEN`` on the command line."""
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} ROLLBACK_FILE TOKEN")
    sys.exit(run(Path(sys.argv[1]), sys.argv[2]))


if __name__ == "__main__":
    main()
