"""A new version of the fabric file read from the last one (fabric_delta.py) is exactly
what fabric.loads makes of the whole new text, or is left to it."""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ovsnvgre import fabric as fabrics
from ovsnvgre import fabric_delta
from ovsnvgre.errors import FabricError
from ovsnvgre.incremental import vm_changes

HEAD = """\
fabric: delta
datapath_type: netdev
overlay: {tunnel_ports: per-vsid}
hosts:
  h0: {pa: 198.51.100.11/24, uplink: eth1, gateway: 198.51.100.1}
  h1: {pa: 198.51.101.11/24, uplink: eth1, gateway: 198.51.101.1}
  h2: {pa: 198.51.102.11/24, uplink: eth1, gateway: 198.51.102.1}
virtual_subnets:
  s0: {vsid: 5001}
  s1: {vsid: 5002}
"""
TAIL = "# the end\n"


def entry(name: str, host: int, subnet: int, port: int, address: int, block: bool,
          subnet_word: str = "") -> list[str]:
    """One VM entry, as a flow mapping on one line or as a block of lines."""
    fields = {"host": f"h{host}", "subnet": subnet_word or f"s{subnet}", "port": f"vnet{port}",
              "mac": f'"02:00:00:00:00:{address:02x}"', "ca": f"10.0.0.{address + 1}/24"}
    if block:
        return [f"  {name}:\n", *(f"    {key}: {value}\n" for key, value in fields.items())]
    return ["  " + name + ": {" + ", ".join(f"{k}: {v}" for k, v in fields.items()) + "}\n"]


ENTRY = st.builds(entry, name=st.sampled_from([f"vm{i}" for i in range(10)]),
                  host=st.integers(0, 3), subnet=st.integers(0, 2), port=st.integers(0, 4),
                  address=st.integers(0, 12), block=st.booleans(),
                  subnet_word=st.sampled_from(["", "", "", "no"]))
EXTRA = st.sampled_from(["\n", "  # a comment\n", "# top comment\n", "    # deeper\n"])


def text_of(head: list[str], entries: list[list[str]], after_vms: list[str]) -> str:
    return "".join(head) + "vms:\n" + "".join(line for e in entries for line in e) + \
        "".join(after_vms) + TAIL


EDIT = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 20), ENTRY),
    st.tuples(st.just("delete"), st.integers(0, 20), st.none()),
    st.tuples(st.just("replace"), st.integers(0, 20), ENTRY),
    st.tuples(st.just("line"), st.integers(0, 80), EXTRA),
    st.tuples(st.just("host"), st.integers(0, 2), st.none()),
    st.tuples(st.just("anchor"), st.integers(0, 20), st.none()),
)


def loads_or_none(text: str):
    try:
        return fabrics.loads(text, "f.yaml")
    except FabricError:
        return None


@settings(max_examples=400, deadline=None)
@given(entries=st.lists(ENTRY, min_size=1, max_size=8),
       edits=st.lists(EDIT, min_size=1, max_size=4))
def test_a_step_is_what_a_full_load_makes(entries, edits):
    head = HEAD.splitlines(keepends=True)
    valid: list[list[str]] = []
    for candidate in entries:  # a valid file to start from
        if loads_or_none(text_of(head, [*valid, candidate], [])) is not None:
            valid.append(candidate)
    if not valid:
        return
    entries = valid
    text = text_of(head, entries, [])
    fabric = loads_or_none(text)
    version = fabric_delta.start(text, fabric)
    assert version is not None
    for kind, where, value in edits:
        lines = text.splitlines(keepends=True)
        kept = list(entries)
        if kind == "insert":
            entries.insert(where % (len(entries) + 1), value)
        elif kind == "delete" and entries:
            entries.pop(where % len(entries))
        elif kind == "replace" and entries:
            entries[where % len(entries)] = value
        elif kind == "anchor" and entries:
            entries[where % len(entries)] = [entries[where % len(entries)][0].replace(
                "{host", "&a {host")]
        if kind == "line":
            lines.insert(where % (len(lines) + 1), value)
            new_text = "".join(lines)
        elif kind == "host":
            new_text = text.replace(f"h{where}: {{pa: 198.51.10{where}.11/24",
                                    f"h{where}: {{pa: 198.51.10{where}.12/24")
        else:
            new_text = text_of(head, entries, [])
        want = loads_or_none(new_text)
        stepped = fabric_delta.step(version, new_text, "f.yaml")
        if want is None:
            assert stepped is None, "accepted what fabric.loads refuses"
            entries = kept  # as an invalid file is kept out: the last good one stays
            continue
        if stepped is None:
            # Left to fabric.load: start again from its result, as watch does.
            version = fabric_delta.start(new_text, want)
        else:
            version, changed = stepped
            assert version.fabric == want
            assert list(version.fabric.vms) == list(want.vms), "not in file order"
            assert changed == vm_changes(fabric, want)
            assert version.names == list(want.vms)
        fabric, text = want, new_text
        if version is None:
            return


def test_a_vm_appended_to_a_large_fabric_is_one_entry():
    lines = [f"  vm{i}: {{host: h{i % 3}, subnet: s{i % 2}, port: vnet{i}, "
             f'mac: "02:00:00:00:{i // 256:02x}:{i % 256:02x}", '
             f"ca: 10.0.{i // 256}.{i % 256}/16}}\n" for i in range(1, 400)]
    text = HEAD + "vms:\n" + "".join(lines)
    version = fabric_delta.start(text, fabrics.loads(text))
    new = text + '  extra: {host: h0, subnet: s0, port: vx, mac: "02:ff:00:00:00:01", ' \
                 'ca: 10.255.0.1/16}\n'
    stepped = fabric_delta.step(version, new, "f.yaml")
    assert stepped is not None
    assert stepped[1] == {"extra"}
    assert stepped[0].fabric == fabrics.loads(new)


def test_the_vm_rules_it_repeats_are_still_fabric_pys():
    """fabric_delta checks the rules that tie a VM to the others (Version.conflicts) as
    fabric.py's _vms does: when _vms or _build change, look at Version.conflicts again,
    then update this digest."""
    source = inspect.getsource(fabrics._vms) + inspect.getsource(fabrics._build)
    assert hashlib.sha256(source.encode()).hexdigest()[:16] == "cd242fc8e609f06b"


def test_a_vm_a_floating_ip_names_is_left_to_the_full_load():
    """fabric.py checks floating IPs against the VMs (fabric_external.floating_vms)."""
    text = (Path(__file__).parent.parent / "examples" / "gateway.yaml").read_text()
    version = fabric_delta.start(text, fabrics.loads(text, "gateway.yaml"))
    assert version is not None
    without = "".join(line for line in text.splitlines(keepends=True)
                      if not line.startswith("  web-a:"))
    assert loads_or_none(without) is None  # the floating IP names a VM that is gone
    assert fabric_delta.step(version, without, "gateway.yaml") is None
