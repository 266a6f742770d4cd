"""The cache of validated fabrics: data only, keyed by file and code, and its trust rules.

Root may run ovsnvgre with a cache directory a user chose (XDG_CACHE_HOME,
OVSNVGRE_CACHE_DIR): nothing there that the user could have planted is read, and
nothing is written through a link the user could have placed.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import pickle
import tempfile
from pathlib import Path

import pytest
from fabrics import TWO_HOSTS

from ovsnvgre import fabric, fabric_cache, model
from ovsnvgre.errors import FabricError

EVERY_FIELD = """\
fabric: every-field
datapath_type: netdev
underlay: {bridge: ul, tep_port: tp, probe: [192.0.2.1, 192.0.2.2], mtu: 9000}
overlay: {bridge: ov, key_layout: plain, tunnel_ports: per-peer, bfd: yes, vm_mtu: 8900,
          router_mac: 0a:00:00:00:01:fe}
routing_domains:
  contoso: {}
  fabrikam:
hosts:
  h1: {pa: 198.51.100.11/24, uplink: eth1, gateway: 198.51.100.1}
  h2: {pa: 203.0.113.11/28}
virtual_subnets:
  red: {vsid: 5001}
  blue: {vsid: 16777214}
  web: {vsid: 4096, prefix: 10.0.0.0/16, routing_domain: contoso}
  lan: {vsid: 4097, prefix: 10.1.0.0/24}
vms:
  v4: {host: h1, subnet: red, port: p0, mac: 52:54:00:12:34:56, ca: 10.0.7.241/16}
  v6: {host: h2, subnet: blue, port: p1, mac: "02:00:00:00:00:02", ca: "fd00:0:0:1::5/64"}
"""


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A private cache directory, as the cache makes it (mode 0700, ours)."""
    directory = tmp_path / "cache"
    monkeypatch.setenv("OVSNVGRE_CACHE_DIR", str(directory))
    monkeypatch.delenv("OVSNVGRE_NO_CACHE", raising=False)
    return directory


def cached_once(cache: Path, text: str = TWO_HOSTS) -> tuple[bytes, Path]:
    """Load ``text`` from a file once (which caches it); its bytes and the entry."""
    path = cache.parent / "fabric.yaml"
    path.write_text(text)
    fabric.load(path)
    data = path.read_bytes()
    name = fabric_cache.entry_name(data)
    assert name is not None
    entry = cache / name
    assert entry.is_file() and fabric_cache.get(data) is not None
    return data, entry


def needs_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI must run every test, but this one needs root (chown)")
        pytest.skip("chown to another user needs root")


# --- what is cached, and when it is used ---------------------------------------------


def test_every_field_comes_back_exactly(cache):
    data, entry = cached_once(cache, EVERY_FIELD)
    parsed = fabric.loads(EVERY_FIELD, "f.yaml")
    back = fabric_cache.get(data)
    assert back == parsed
    for a, b in ((back.vms["v4"].ca, parsed.vms["v4"].ca), (back.vms["v6"].ca,
                                                           parsed.vms["v6"].ca)):
        assert type(a) is type(b) and a.network == b.network
    assert back.vms["v6"].ca == ipaddress.ip_interface("fd00:0:0:1::5/64")
    assert back.underlay.probe == parsed.underlay.probe
    assert type(back.overlay.key_layout) is model.KeyLayout
    assert back.hosts["h2"].gateway is None and back.hosts["h2"].uplink is None
    assert back.overlay.router_mac == "0a:00:00:00:01:fe"
    assert list(back.routing_domains) == ["contoso", "fabrikam"]
    assert back.virtual_subnets["web"].prefix == ipaddress.IPv4Network("10.0.0.0/16")
    assert back.virtual_subnets["web"].routing_domain == "contoso"
    assert back.virtual_subnets["lan"].routing_domain is None
    assert back.virtual_subnets["red"].prefix is None
    assert back.subnets_in("contoso") == (back.virtual_subnets["web"],)
    assert json.loads(entry.read_text())["entry"] == entry.name  # data: JSON, not a pickle


def test_the_flow_id_comes_back(cache):
    text = EVERY_FIELD.replace("key_layout: plain", "flow_id: hash")
    data, _ = cached_once(cache, text)
    back = fabric_cache.get(data)
    assert back == fabric.loads(text, "f.yaml")
    assert back.overlay.flow_id is model.FlowId.HASH


def test_the_written_fields_are_the_models_fields():
    """A field added to model.py must be added to the cache's encoding too."""
    for cls, written in fabric_cache.FIELDS.items():
        assert tuple(f.name for f in dataclasses.fields(cls)) == written, cls.__name__
    # FabricIndex is derived from a Fabric on first use, never written.
    shaped = {cls for cls in vars(model).values()
              if isinstance(cls, type) and dataclasses.is_dataclass(cls)} - {model.FabricIndex}
    assert shaped == set(fabric_cache.FIELDS)


def test_an_unchanged_file_comes_from_the_cache_and_a_changed_one_is_parsed(cache, tmp_path):
    data, _ = cached_once(cache)
    elsewhere = tmp_path / "copy.yaml"
    elsewhere.write_bytes(data)
    again = fabric.load(elsewhere)
    assert again == fabric.loads(data) and again.source == str(elsewhere)  # errors name it
    path = tmp_path / "fabric.yaml"
    path.write_text(TWO_HOSTS.replace("vsid: 5001", "vsid: 5002"))
    assert fabric.load(path).virtual_subnets["red"].vsid == 5002
    path.write_text(TWO_HOSTS.replace("vsid: 5001", "vsid: 12"))
    with pytest.raises(FabricError, match="12 is outside"):
        fabric.load(path)


def test_a_fabric_cached_by_other_code_is_not_used(cache, monkeypatch):
    """A new validation rule or a renamed field must not be skipped by an old entry,
    whatever __version__ says: the cache key holds the code that builds a Fabric."""
    data, _ = cached_once(cache)
    monkeypatch.setattr(fabric_cache, "_code_digest", lambda: b"the code after an upgrade")
    assert fabric_cache.get(data) is None
    here = Path(fabric.__file__).parent
    assert set(fabric_cache._SHAPING) <= {p.name for p in here.glob("*.py")}


def test_a_damaged_entry_is_parsed_again_and_rewritten(cache):
    data, entry = cached_once(cache)
    for damage in (b"", b"{not json", b'{"entry": "x", "fabric": []}',
                   json.dumps({"entry": entry.name, "fabric": [1, 2]}).encode()):
        entry.write_bytes(damage)
        assert fabric_cache.get(data) is None
        assert fabric.load(cache.parent / "fabric.yaml").name == "contoso"
        assert fabric_cache.get(data) is not None


def test_the_cache_can_be_turned_off(cache, monkeypatch):
    monkeypatch.setenv("OVSNVGRE_NO_CACHE", "1")
    path = cache.parent / "fabric.yaml"
    path.write_text(TWO_HOSTS)
    fabric.load(path)
    assert not cache.exists()


def test_a_pickle_in_the_cache_is_never_loaded_and_is_removed(cache, tmp_path):
    """Entries of older versions were pickles: loading one runs whatever it says."""
    data, entry = cached_once(cache)
    marker = tmp_path / "ran"
    planted = cache / (entry.stem + ".pickle")
    planted.write_bytes(pickle.dumps(Exploit(str(marker))))
    planted.chmod(0o600)
    entry.unlink()
    assert fabric.load(cache.parent / "fabric.yaml").name == "contoso"
    assert not marker.exists() and not planted.exists()


class Exploit:
    """Unpickling this touches a file: what a planted pickle could do as root."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_only_the_newest_entries_are_kept(cache):
    for vsid in range(5001, 5001 + fabric_cache.KEEP + 3):
        cached_once(cache, TWO_HOSTS.replace("vsid: 5001", f"vsid: {vsid}"))
    assert len(list(cache.glob("fabric-*.json"))) == fabric_cache.KEEP


# --- trust: the directory -------------------------------------------------------------


def test_a_symlinked_cache_directory_is_refused(cache, tmp_path, monkeypatch):
    data, entry = cached_once(cache)
    link = tmp_path / "link"
    link.symlink_to(cache, target_is_directory=True)
    monkeypatch.setenv("OVSNVGRE_CACHE_DIR", str(link))
    assert fabric_cache.get(data) is None  # a good entry, behind a link: not read
    entry.unlink()
    fabric.load(cache.parent / "fabric.yaml")
    assert list(cache.iterdir()) == []  # and nothing written through the link


@pytest.mark.parametrize("mode", [0o770, 0o702, 0o777], ids=oct)
def test_a_cache_directory_others_may_write_is_refused(cache, mode):
    data, entry = cached_once(cache)
    cache.chmod(mode)
    assert fabric_cache.get(data) is None
    entry.unlink()
    fabric.load(cache.parent / "fabric.yaml")
    assert list(cache.iterdir()) == []


def test_a_cache_directory_of_another_user_is_refused(cache):
    needs_root()
    data, entry = cached_once(cache)
    os.chown(cache, 65534, 65534)
    assert fabric_cache.get(data) is None
    entry.unlink()
    fabric.load(cache.parent / "fabric.yaml")
    assert list(cache.iterdir()) == []


def test_a_new_cache_directory_is_private(cache):
    cached_once(cache)
    assert cache.stat().st_mode & 0o777 == 0o700


# --- trust: the entry -------------------------------------------------------------------


def test_an_entry_of_another_user_is_refused(cache):
    needs_root()
    data, entry = cached_once(cache)
    os.chown(entry, 65534, 65534)
    assert fabric_cache.get(data) is None


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666], ids=oct)
def test_an_entry_others_may_write_is_refused(cache, mode):
    data, entry = cached_once(cache)
    entry.chmod(mode)
    assert fabric_cache.get(data) is None


def test_a_symlinked_entry_is_refused(cache):
    data, entry = cached_once(cache)
    real = cache / "elsewhere.json"  # ours, private, the right content: only the link is wrong
    entry.rename(real)
    entry.symlink_to(real)
    assert fabric_cache.get(data) is None


def test_a_symlink_at_the_entry_name_is_replaced_not_written_through(cache, tmp_path):
    data, entry = cached_once(cache)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    entry.unlink()
    entry.symlink_to(victim)
    fabric.load(cache.parent / "fabric.yaml")
    assert victim.read_text() == "precious"
    assert not entry.is_symlink() and fabric_cache.get(data) is not None


def test_a_symlink_at_any_temporary_name_is_not_written_through(cache, tmp_path, monkeypatch):
    """mkstemp picks random names; here it is made to try planted ones first."""
    data, entry = cached_once(cache)
    entry.unlink()
    victim = tmp_path / "victim"
    victim.write_text("precious")
    planted = [f"planted{i}" for i in range(5)]
    for name in planted:
        (cache / f".fabric-{name}.tmp").symlink_to(victim)
    # Where the cache wrote its temporary file before: fabric-<key>.<pid>.tmp.
    (cache / f"{entry.stem}.{os.getpid()}.tmp").symlink_to(victim)
    names = iter([*planted, "fresh"])
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: names)
    fabric.load(cache.parent / "fabric.yaml")
    assert victim.read_text() == "precious"
    assert fabric_cache.get(data) is not None
    assert all((cache / f".fabric-{name}.tmp").is_symlink() for name in planted)


def test_a_killed_runs_temporary_file_is_removed_later(cache):
    data, entry = cached_once(cache)
    left = cache / ".fabric-killed.tmp"
    left.write_text("half")
    os.utime(left, (0, 0))
    recent = cache / ".fabric-running.tmp"
    recent.write_text("being written")
    entry.unlink()
    fabric.load(cache.parent / "fabric.yaml")
    assert not left.exists() and recent.exists()
