"""Certified digests of desired flow sets: a converged bridge is recognised without
computing its flows again.

The desired flows of a host (``pipeline.desired_flows``) are a pure function of the
fabric, the host, the ports that are live and ovsnvgre's own code (a stage that came
to read anything else - the kernel, a file, the clock - would have to add it to
``key``).  A run that
computes them stores the sha256 of their dump lines (``Flow.dump_line``, sorted, one
per line) under a key made of exactly those inputs: the fabric's repr (every field of
every dataclass of model.py, in file order), the host's name, the live ports, the
source of every module of the ovsnvgre package and the Python version.  The next run
with the same key compares that digest with the digest of the switch's dump: equal
means the switch holds exactly the desired flows, which need not be built (~0.4 s at
1,000 hosts, ~2 s at 5,000).  Any other dump - one flow added, removed or changed by
anyone - differs, and the run computes the flows and compares them as before: no
drift goes unseen.  A key costs a repr of the fabric (~0.06 s at 20,000 VMs).

Entries live beside the cached fabrics (fabric_cache.directory(), the same trust
rules: a directory owned by the effective user and writable by nobody else, entries
opened with O_NOFOLLOW and used only when they are regular files of that user,
written to a temporary file and renamed).  Any problem means no entry: the flows are
computed.  OVSNVGRE_NO_CACHE=1 turns it off.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from ovsnvgre import __version__, fabric_cache
from ovsnvgre.model import Fabric

KEEP = 32  # entries kept; older ones are removed
STALE = 600  # seconds after which a temporary file left by a killed run is removed
PREFIX = "flows-"


@functools.cache
def _code_digest() -> bytes | None:
    """sha256 of every module of the package: the pipeline may import any of them."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    try:
        for path in sorted(here.rglob("*.py")):
            digest.update(str(path.relative_to(here)).encode() + b"\0" + path.read_bytes())
    except OSError:
        return None
    return digest.digest()


def key(fabric: Fabric, host: str, live: Iterable[str]) -> str | None:
    """The key of the desired flows of ``host`` for the ports ``live``; None when the
    code cannot be read (installed as a zip) or the cache is off."""
    code = _code_digest()
    if code is None or fabric_cache.directory() is None:
        return None
    digest = hashlib.sha256(b"%s\0%s\0" % (__version__.encode(), sys.version.encode()) + code)
    digest.update(repr(fabric).encode())
    digest.update(b"\0" + host.encode() + b"\0" + "\0".join(sorted(live)).encode())
    return digest.hexdigest()[:40]


def digest(lines: Iterable[str]) -> str:
    """The digest of a set of dump lines, whatever their order (line by line: the
    lines of 250,000 flows joined would be one more 60 MB string)."""
    hashed = hashlib.sha256()
    for line in sorted(lines):
        hashed.update(line.encode())
        hashed.update(b"\n")
    return hashed.hexdigest()


def _ours(info: os.stat_result, kind: int) -> bool:
    """Of the right kind, owned by the effective user, writable by nobody else."""
    return (stat.S_IFMT(info.st_mode) == kind and info.st_uid == os.geteuid()
            and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def get(entry: str) -> str | None:
    """The digest stored under ``entry`` (a key), or None."""
    where = fabric_cache.directory()
    directory_fd = fabric_cache.open_directory(where) if where is not None else None
    if directory_fd is None:
        return None
    try:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # no FIFO hangs
        fd = os.open(PREFIX + entry, flags, dir_fd=directory_fd)
        with os.fdopen(fd, "rb") as file:
            if not _ours(os.fstat(file.fileno()), stat.S_IFREG):
                return None
            text = file.read(200).decode("ascii").strip()
        return text if len(text) == 64 and all(c in "0123456789abcdef" for c in text) \
            else None
    except (OSError, ValueError):
        return None  # absent, a symlink, damaged: compute the flows instead
    finally:
        os.close(directory_fd)


def put(entry: str, value: str) -> None:
    """Store ``value`` (a digest) under ``entry``; any OSError leaves it unstored."""
    where = fabric_cache.directory()
    directory_fd = fabric_cache.open_directory(where, create=True) if where is not None \
        else None
    if directory_fd is None:
        return
    try:
        # mkstemp inside the directory opened and checked above, whatever its path is now.
        fd, temporary = tempfile.mkstemp(prefix=f".{PREFIX}", suffix=".tmp",
                                         dir=f"/proc/self/fd/{directory_fd}")
        temporary = os.path.basename(temporary)
        try:
            with os.fdopen(fd, "w") as file:
                file.write(value + "\n")
            os.replace(temporary, PREFIX + entry, src_dir_fd=directory_fd,
                       dst_dir_fd=directory_fd)
        except OSError:
            os.unlink(temporary, dir_fd=directory_fd)
            raise
        _evict(directory_fd)
    except OSError:
        pass  # a read-only home, a full disk: the next run computes the flows again
    finally:
        os.close(directory_fd)


def _evict(directory_fd: int) -> None:
    """Keep the KEEP newest entries; remove temporary files of killed runs."""
    entries, now = [], time.time()
    with os.scandir(directory_fd) as found:
        for item in found:
            info = item.stat(follow_symlinks=False)
            if item.name.startswith(PREFIX):
                entries.append((info.st_mtime, item.name))
            elif item.name.startswith(f".{PREFIX}") and now - info.st_mtime > STALE:
                os.unlink(item.name, dir_fd=directory_fd)
    for _, old in sorted(entries)[:-KEEP]:
        os.unlink(old, dir_fd=directory_fd)
