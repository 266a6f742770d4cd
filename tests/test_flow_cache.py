"""Certified digests of desired flows (flow_cache.py): the key holds every input of the
flows, an entry is trusted only as fabric_cache trusts one, and no drift hides behind it."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import subprocess
import sys

import pytest
from fabrics import TWO_HOSTS

from ovsnvgre import fabric, flow_cache, model

FABRIC = fabric.loads(TWO_HOSTS, "f.yaml")
LIVE = {"vnet0", "vnet1", "gcb00710b001389"}


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    where = tmp_path / "cache"
    monkeypatch.setenv("OVSNVGRE_CACHE_DIR", str(where))
    monkeypatch.delenv("OVSNVGRE_NO_CACHE", raising=False)
    return where


def test_every_fabric_field_is_part_of_the_key():
    """The key is the fabric's repr: a field left out of it (repr=False) could change
    the flows without changing the key."""
    for _, cls in inspect.getmembers(model, dataclasses.is_dataclass):
        for field in dataclasses.fields(cls):
            assert field.repr, f"{cls.__name__}.{field.name} is not in the flow cache's key"


def test_the_key_changes_with_each_input(cache_dir):
    key = flow_cache.key(FABRIC, "host1", LIVE)
    assert key == flow_cache.key(fabric.loads(TWO_HOSTS, "f.yaml"), "host1", sorted(LIVE))
    other_mac = fabric.loads(TWO_HOSTS.replace("02:00:00:00:50:02", "02:00:00:00:50:99"),
                             "f.yaml")
    assert flow_cache.key(other_mac, "host1", LIVE) != key
    assert flow_cache.key(FABRIC, "host2", LIVE) != key
    assert flow_cache.key(FABRIC, "host1", LIVE - {"vnet1"}) != key


def test_the_key_is_the_same_in_another_process(cache_dir):
    """String hashing differs between processes: the key must not depend on it."""
    code = ("import json, sys; from fabrics import TWO_HOSTS; from ovsnvgre import fabric, "
            "flow_cache; print(flow_cache.key(fabric.loads(TWO_HOSTS, 'f.yaml'), 'host1', "
            "json.loads(sys.argv[1])))")
    keys = {subprocess.run([sys.executable, "-c", code, json.dumps(sorted(LIVE))], check=True,
                           capture_output=True, text=True, cwd=os.path.dirname(__file__),
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip()
            for seed in ("1", "2")}
    assert keys == {flow_cache.key(FABRIC, "host1", LIVE)}


def test_no_key_when_the_cache_is_off(cache_dir, monkeypatch):
    monkeypatch.setenv("OVSNVGRE_NO_CACHE", "1")
    assert flow_cache.key(FABRIC, "host1", LIVE) is None


def test_the_digest_is_of_the_set_of_lines():
    assert flow_cache.digest(["b", "a"]) == flow_cache.digest(("a", "b"))
    assert flow_cache.digest(["a"]) != flow_cache.digest(["a", "b"])


def test_an_entry_is_read_back_only_when_trusted(cache_dir):
    key = flow_cache.key(FABRIC, "host1", LIVE)
    assert key is not None and flow_cache.get(key) is None
    value = flow_cache.digest(["x"])
    flow_cache.put(key, value)
    assert flow_cache.get(key) == value
    entry = cache_dir / f"{flow_cache.PREFIX}{key}"
    entry.chmod(0o666)  # writable by others: not trusted
    assert flow_cache.get(key) is None
    entry.unlink()
    planted = cache_dir / "elsewhere"
    planted.write_text(value + "\n")
    entry.symlink_to(planted)  # a link: not followed
    assert flow_cache.get(key) is None


def owned(host, table: int) -> list[str]:
    out = host.netns.exec("ovs-ofctl", "-O", "OpenFlow13", "--no-stats", "--names",
                          "dump-flows", "br-int", f"cookie=0x6f76736e76677265/-1,table={table}",
                          env=host.switch.env).stdout
    return [line.strip() for line in out.splitlines() if "actions=" in line]


def test_a_flow_changed_by_hand_is_found_though_an_entry_certifies_the_flows(host1):
    assert host1.ovsnvgre("up").returncode == 0
    # The no-op that follows reads its certified entry (made by the first run).
    assert "no changes" in host1.ovsnvgre("up").stdout
    flow = next(line for line in owned(host1, 20) if "dl_dst=02:00:00:00:50:02" in line)
    match = flow.split(" actions=")[0].split(", ", 2)[2]  # after cookie and table
    host1.netns.exec("ovs-ofctl", "-O", "OpenFlow13", "--strict", "mod-flows", "br-int",
                     f"table=20,{match},actions=drop", env=host1.switch.env)
    assert flow not in owned(host1, 20)
    plan = host1.ovsnvgre("plan")
    assert "flows in table forward of br-int: +1 -0" in plan.stdout, plan.stdout
    repaired = host1.ovsnvgre("up", "--json")
    assert repaired.returncode == 0, repaired.stderr
    assert json.loads(repaired.stdout)["flow_mods"] == 1
    assert flow in owned(host1, 20)
    assert "no changes" in host1.ovsnvgre("up").stdout
