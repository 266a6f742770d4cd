"""Flow dumps already proven to equal the desired pipeline, so a no-op run need not redo it.

Proving that a bridge holds exactly the desired flows costs a converged run of
10,000 flows ~0.17 s: computing the pipeline and parsing the dump.  Once a run
has proven it, the dump's digest is kept under a key of everything the pipeline
is computed from (ovsnvgre's version, the fabric file's bytes, the host, the
bridge, the live VM ports).  A later run whose dump has the same digest under
the same key holds the same flows, so it is converged without parsing; any
other dump - a flow deleted, added or changed by hand - misses and is parsed
and compared in full.  It lives beside the fabric cache, with its trust rules.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from ovsnvgre import __version__, fabric_cache

KEEP = 16  # proofs kept; older ones are removed


def key(fabric_digest: str, host: str, bridge: str, live_ports: Iterable[str]) -> str | None:
    """None when there is nothing to key on (a fabric not read from a file)."""
    if not fabric_digest:
        return None
    parts = [__version__, fabric_digest, host, bridge, *sorted(live_ports)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def _path(memo_key: str) -> Path | None:
    where = fabric_cache.directory()
    return None if where is None else where / f"flows-{memo_key}.proof"


def proven(memo_key: str | None, dump_digest: str) -> bool:
    path = _path(memo_key) if memo_key else None
    try:
        if path is None or not fabric_cache.trusted(path.parent, stat.S_IFDIR) \
                or not fabric_cache.trusted(path, stat.S_IFREG):
            return False
        return path.read_text().strip() == dump_digest
    except OSError:
        return False


def remember(memo_key: str | None, dump_digest: str) -> None:
    path = _path(memo_key) if memo_key else None
    if path is None:
        return
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(dump_digest + "\n")
        os.replace(temporary, path)
        entries = sorted(path.parent.glob("flows-*.proof"), key=lambda p: p.stat().st_mtime)
        for old in entries[:-KEEP]:
            old.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only home, a full disk: the next run proves it again
