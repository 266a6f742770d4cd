"""A cache of validated fabrics, keyed by the file's exact bytes.

Parsing and validating a fabric of thousands of VMs costs ~0.2 s, most of a
converged run; an unchanged file is read back from a pickle instead.  Only files
owned by this user and writable by nobody else are trusted, and any problem with
the cache falls back to parsing.  OVSNVGRE_NO_CACHE=1 turns it off.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import os
import pickle
import stat
import sys
from pathlib import Path
from typing import Any

from ovsnvgre import __version__

# The modules whose code decides what a fabric file becomes: a cached fabric is
# only valid for the very code that validated and built it (a new rule, a renamed
# field), whatever __version__ says.
_SHAPING = ("model.py", "fabric.py", "fabric_checks.py", "fabric_yaml.py", "nvgre.py",
            "family.py")

KEEP = 8  # cached fabrics kept; older ones are removed


def _interface(address: int, prefixlen: int, version: int) -> Any:
    cls = ipaddress.IPv4Interface if version == 4 else ipaddress.IPv6Interface
    return cls((address, prefixlen))


class _Pickler(pickle.Pickler):
    """Pickles IP interfaces (every VM's CA) as numbers, not text.

    ipaddress pickles an interface as its string, which unpickling parses again:
    a third of the time it takes to read back a fabric of 3,000 VMs.
    """

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) in (ipaddress.IPv4Interface, ipaddress.IPv6Interface):
            return _interface, (int(obj.ip), obj.network.prefixlen, obj.version)
        return NotImplemented


@functools.cache
def _code_digest() -> bytes:
    digest = hashlib.sha256()
    here = Path(__file__).parent
    for name in _SHAPING:
        digest.update(name.encode() + b"\0" + (here / name).read_bytes())
    return digest.digest()


def directory() -> Path | None:
    """Where cached fabrics live: $OVSNVGRE_CACHE_DIR, else $XDG_CACHE_HOME/ovsnvgre
    (~/.cache/ovsnvgre); None when OVSNVGRE_NO_CACHE is set."""
    if os.environ.get("OVSNVGRE_NO_CACHE"):
        return None
    if os.environ.get("OVSNVGRE_CACHE_DIR"):
        return Path(os.environ["OVSNVGRE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ovsnvgre"


def _path(data: bytes) -> Path | None:
    where = directory()
    if where is None:
        return None
    try:
        code = _code_digest()
    except OSError:  # installed without its sources (a zip): no cache
        return None
    key = hashlib.sha256(b"%s\0%s\0%s\0" % (__version__.encode(), sys.version.encode(), code)
                         + data)
    return where / f"fabric-{key.hexdigest()[:32]}.pickle"


def _trusted(path: Path, kind: int) -> bool:
    """Ours alone: of the right kind, owned by us, writable by nobody else."""
    info = path.lstat()
    return (stat.S_IFMT(info.st_mode) == kind and info.st_uid == os.geteuid()
            and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def get(data: bytes) -> Any | None:
    """The fabric cached for exactly these file bytes (and this code), or None."""
    path = _path(data)
    try:
        if path is None or not _trusted(path.parent, stat.S_IFDIR) \
                or not _trusted(path, stat.S_IFREG):
            return None
        return pickle.loads(path.read_bytes())  # noqa: S301 - our own file, checked above
    except Exception:  # noqa: BLE001 - a missing or damaged entry: parse instead
        return None


def put(data: bytes, fabric: Any) -> None:
    """Cache ``fabric`` for these file bytes; any OSError just leaves it uncached."""
    path = _path(data)
    if path is None:
        return
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            _Pickler(f, protocol=pickle.HIGHEST_PROTOCOL).dump(fabric)
        os.replace(temporary, path)
        entries = sorted(path.parent.glob("fabric-*.pickle"), key=lambda p: p.stat().st_mtime)
        for old in entries[:-KEEP]:
            old.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only home, a full disk: the next run parses again
