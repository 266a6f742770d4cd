"""The fabric file, watched for `ovsnvgre watch`: inotify events (the watchdog library)
when a new version is complete, and the file's identity to compare.

A new version is complete when a writer closes the file (IN_CLOSE_WRITE: `cp`, `>`, an
editor saving in place) or when one is renamed onto its name (IN_MOVED_TO: an editor
or a configuration manager writing beside it first, the atomic way).  Partial writes
(IN_MODIFY) are not reported: a half-written file would only be refused.  Watch also
compares ``signature`` once a second, for what inotify does not see (the target of a
symbolic link changing, a network file system).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def signature(path: Path) -> tuple[int, ...] | None:
    """What changes when the file at ``path`` changes (its inode, size, modification and
    change times, in ns), or None when it cannot be read."""
    try:
        found = path.stat()
    except OSError:
        return None
    return (found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns)


class FileWatch:
    """Calls ``on_change`` (from the observer's thread) whenever a new version of the file
    at ``path`` is complete; ``start`` and ``stop`` it.  Watches the file's directory, so
    that a file renamed onto the name is seen."""

    def __init__(self, path: Path, on_change: Callable[[], None]) -> None:
        """``path``: the fabric file; ``on_change()``: called for each complete version."""
        self.path = os.path.abspath(path)
        self.on_change = on_change
        self.observer: Any = None

    def start(self) -> str | None:
        """Start watching; returns why it cannot (then only the periodic check runs)."""
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        watch = self

        class Handler(FileSystemEventHandler):  # type: ignore[misc]
            def on_any_event(self, event: Any) -> None:
                kind = event.event_type
                if (kind == "closed" and os.fsdecode(event.src_path) == watch.path) or \
                        (kind == "moved" and os.fsdecode(event.dest_path) == watch.path):
                    watch.on_change()

        observer = Observer()
        try:
            observer.schedule(Handler(), os.path.dirname(self.path), recursive=False)
            observer.start()
        except OSError as exc:
            return f"cannot watch {os.path.dirname(self.path)} for changes: " \
                   f"{exc.strerror or exc}"
        self.observer = observer
        return None

    def stop(self) -> None:
        """Stop watching (and the observer's thread)."""
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=5)
            self.observer = None
