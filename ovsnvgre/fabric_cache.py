"""A cache of validated fabrics, keyed by the file's exact bytes and the code that built them.

Parsing and validating a fabric costs ~0.1 s of CPU at 3,000 VMs, ~0.6 s at 20,000 and
~3 s at 100,000, most of a converged run; an unchanged file is read back instead, 5-10x
faster, from data only: the validated fabric as JSON, rebuilt into model.py's
dataclasses without being validated again (bench/README.md, "Fabric cache" and
"`validate` at 100,000 VMs", has the figures).  No pickle: reading an entry can build
nothing but those dataclasses.

Trust (root may run with a user's XDG_CACHE_HOME or OVSNVGRE_CACHE_DIR): the cache
directory is opened once with O_NOFOLLOW, and used only when it is a directory owned
by the effective user and writable by nobody else; every later step goes through that
open directory, so swapping the path meanwhile changes nothing.  An entry is opened
with O_NOFOLLOW and used only when it is a regular file owned by that user and
writable by nobody else.  Writes go to a new file made by tempfile.mkstemp (O_EXCL,
O_NOFOLLOW, mode 0600) inside the opened directory, then renamed over the entry.  Any
problem means no cache: the file is parsed.  OVSNVGRE_NO_CACHE=1 turns it off.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import os
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ovsnvgre import __version__
from ovsnvgre.model import (
    DatapathType,
    External,
    Fabric,
    FlowId,
    Host,
    KeyLayout,
    Overlay,
    RoutingDomain,
    TunnelPorts,
    Underlay,
    VirtualSubnet,
    Vm,
)

# The modules whose code decides what a fabric file becomes: a cached fabric is
# only valid for the very code that validated and built it (a new rule, a renamed
# field), whatever __version__ says.
_SHAPING = ("model.py", "fabric.py", "fabric_checks.py", "fabric_yaml.py", "nvgre.py",
            "family.py", "fabric_cache.py", "fabric_routing.py", "fabric_external.py")

# The fields each dataclass is written with, in order (a test holds them to model.py).
FIELDS: dict[type, tuple[str, ...]] = {
    Fabric: ("name", "datapath_type", "underlay", "overlay", "hosts", "virtual_subnets",
             "vms", "routing_domains",
             "source"),  # source is not written: it is the file given to load()
    Underlay: ("bridge", "tep_port", "probe", "mtu"),
    Overlay: ("bridge", "key_layout", "tunnel_ports", "bfd", "vm_mtu", "flow_id",
              "router_mac"),
    Host: ("name", "pa", "uplink", "gateway"),
    RoutingDomain: ("name", "external"),
    External: ("host", "nic", "address", "gateway", "floating_ips"),
    VirtualSubnet: ("name", "vsid", "prefix", "routing_domain"),
    Vm: ("name", "host", "virtual_subnet", "port", "mac", "ca"),
}

KEEP = 8  # cached fabrics kept; older ones are removed
STALE = 600  # seconds after which a temporary file left by a killed run is removed
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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


def entry_name(data: bytes) -> str | None:
    """The entry's file name for these file bytes and this code; None without the code
    (installed as a zip)."""
    try:
        code = _code_digest()
    except OSError:
        return None
    key = hashlib.sha256(b"%s\0%s\0%s\0" % (__version__.encode(), sys.version.encode(), code)
                         + data)
    return f"fabric-{key.hexdigest()[:32]}.json"


def _ours(info: os.stat_result, kind: int) -> bool:
    """Of the right kind, owned by the effective user, writable by nobody else."""
    return (stat.S_IFMT(info.st_mode) == kind and info.st_uid == os.geteuid()
            and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def open_directory(path: Path, create: bool = False) -> int | None:
    """The cache directory opened (a file descriptor), when it is trusted; else None."""
    try:
        if create:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, _DIRECTORY_FLAGS)
    except OSError:  # absent, a symlink (ELOOP), not a directory, not ours to make
        return None
    if not _ours(os.fstat(fd), stat.S_IFDIR):
        os.close(fd)
        return None
    return fd


def get(data: bytes) -> Fabric | None:
    """The fabric cached for exactly these file bytes (and this code), or None."""
    where, name = directory(), entry_name(data)
    if where is None or name is None:
        return None
    directory_fd = open_directory(where)
    if directory_fd is None:
        return None
    try:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # no FIFO hangs
        fd = os.open(name, flags, dir_fd=directory_fd)
        with os.fdopen(fd, "rb") as file:
            if not _ours(os.fstat(file.fileno()), stat.S_IFREG):
                return None
            document = json.loads(file.read())
        if document["entry"] != name:
            return None
        return decode(document["fabric"])
    except (OSError, ValueError, LookupError, TypeError, AttributeError):
        return None  # absent, a symlink, damaged: parse instead
    finally:
        os.close(directory_fd)


def put(data: bytes, fabric: Fabric) -> None:
    """Cache ``fabric`` for these file bytes; any OSError just leaves it uncached."""
    where, name = directory(), entry_name(data)
    if where is None or name is None:
        return
    directory_fd = open_directory(where, create=True)
    if directory_fd is None:
        return
    try:
        text = json.dumps({"entry": name, "fabric": encode(fabric)}, separators=(",", ":"))
        # mkstemp inside the directory opened and checked above, whatever its path is now.
        fd, temporary = tempfile.mkstemp(prefix=".fabric-", suffix=".tmp",
                                         dir=f"/proc/self/fd/{directory_fd}")
        temporary = os.path.basename(temporary)
        try:
            with os.fdopen(fd, "w") as file:
                file.write(text)
            os.replace(temporary, name, src_dir_fd=directory_fd, dst_dir_fd=directory_fd)
        except OSError:
            os.unlink(temporary, dir_fd=directory_fd)
            raise
        _evict(directory_fd)
    except OSError:
        pass  # a read-only home, a full disk: the next run parses again
    finally:
        os.close(directory_fd)


def _evict(directory_fd: int) -> None:
    """Keep the KEEP newest entries; remove temporary files of killed runs and the
    pickles of older versions."""
    entries, now = [], time.time()
    with os.scandir(directory_fd) as found:
        for item in found:
            info = item.stat(follow_symlinks=False)
            if item.name.startswith("fabric-") and item.name.endswith(".json"):
                entries.append((info.st_mtime, item.name))
            elif (item.name.startswith("fabric-") and item.name.endswith(".pickle")) or (
                    item.name.startswith(".fabric-") and item.name.endswith(".tmp")
                    and now - info.st_mtime > STALE):
                os.unlink(item.name, dir_fd=directory_fd)
    for _, old in sorted(entries)[:-KEEP]:
        os.unlink(old, dir_fd=directory_fd)


# --- the data: a validated Fabric as JSON values, and back ---------------------------


def _interface(address: int, prefixlen: int, version: int) -> Any:
    cls = ipaddress.IPv4Interface if version == 4 else ipaddress.IPv6Interface
    return cls((address, prefixlen))


def encode(fabric: Fabric) -> list[Any]:
    """``fabric`` as JSON values (lists in FIELDS order; addresses as integers)."""
    underlay, overlay = fabric.underlay, fabric.overlay
    return [
        fabric.name, fabric.datapath_type.value,
        [underlay.bridge, underlay.tep_port, [int(p) for p in underlay.probe], underlay.mtu],
        [overlay.bridge, overlay.key_layout.value, overlay.tunnel_ports.value, overlay.bfd,
         overlay.vm_mtu, overlay.flow_id.value, overlay.router_mac],
        [[h.name, int(h.pa.ip), h.pa.network.prefixlen, h.uplink,
          None if h.gateway is None else int(h.gateway)] for h in fabric.hosts.values()],
        [[s.name, s.vsid, None if s.prefix is None else int(s.prefix.network_address),
          None if s.prefix is None else s.prefix.prefixlen, s.routing_domain]
         for s in fabric.virtual_subnets.values()],
        [[v.name, v.host, v.virtual_subnet, v.port, v.mac, int(v.ca.ip),
          v.ca.network.prefixlen, v.ca.version] for v in fabric.vms.values()],
        [[d.name, _encode_external(d.external)] for d in fabric.routing_domains.values()],
    ]


def _encode_external(external: External | None) -> list[Any] | None:
    if external is None:
        return None
    return [external.host, external.nic, int(external.address.ip),
            external.address.network.prefixlen, int(external.gateway),
            [[vm, int(ip)] for vm, ip in external.floating_ips.items()]]


def _decode_external(values: list[Any] | None) -> External | None:
    if values is None:
        return None
    host, nic, address, prefixlen, gateway, floating = values
    v4 = ipaddress.IPv4Address
    return External(host, nic, ipaddress.IPv4Interface((address, prefixlen)), v4(gateway),
                    {vm: v4(ip) for vm, ip in floating})


def decode(values: list[Any]) -> Fabric:
    """The Fabric that ``encode`` wrote (no validation: it was validated before)."""
    name, datapath_type, underlay, overlay, hosts, subnets, vms, domains = values
    v4 = ipaddress.IPv4Address
    return Fabric(
        name=name, datapath_type=DatapathType(datapath_type),
        underlay=Underlay(underlay[0], underlay[1], tuple(v4(p) for p in underlay[2]),
                          underlay[3]),
        overlay=Overlay(overlay[0], KeyLayout(overlay[1]), TunnelPorts(overlay[2]),
                        overlay[3], overlay[4], FlowId(overlay[5]), overlay[6]),
        hosts={h[0]: Host(h[0], ipaddress.IPv4Interface((h[1], h[2])), h[3],
                          None if h[4] is None else v4(h[4])) for h in hosts},
        virtual_subnets={s[0]: VirtualSubnet(s[0], s[1], None if s[2] is None else
                                             ipaddress.IPv4Network((s[2], s[3])), s[4])
                         for s in subnets},
        vms={v[0]: Vm(v[0], v[1], v[2], v[3], v[4], _interface(v[5], v[6], v[7]))
             for v in vms},
        routing_domains={d[0]: RoutingDomain(d[0], _decode_external(d[1])) for d in domains},
    )
