"""External gateways in the fabric file (issue 19): what loads, and each refusal in one
line naming the file, the line and the entry."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from fabrics import load, refuse
from json_contract import VALIDATE

from ovsnvgre import fabric, fabric_cache

GATEWAY = (Path(__file__).parent.parent / "examples" / "gateway.yaml").read_text()
CONTOSO = """    external:
      host: host3
      nic: eth2
      address: 203.0.113.10/24
      gateway: 203.0.113.1
      floating_ips: {web-a: 203.0.113.21}
"""
FABRIKAM = ("    external: {host: host3, nic: eth2, address: 203.0.113.11/24, "
            "gateway: 203.0.113.1}\n")



def contoso(**changes: str) -> str:
    """The example with contoso's external section changed (key -> new line text)."""
    section = CONTOSO
    for key, value in changes.items():
        lines = [line for line in section.splitlines(keepends=True)
                 if not line.strip().startswith(f"{key}:")]
        if value:
            lines.insert(2, f"      {key}: {value}\n")
        section = "".join(lines)
    assert CONTOSO in GATEWAY
    return GATEWAY.replace(CONTOSO, section)


def test_the_example_loads_with_both_domains_on_one_gateway_host():
    fab = load(GATEWAY)
    contoso_ext = fab.routing_domains["contoso"].external
    assert contoso_ext is not None
    assert contoso_ext.host == "host3" and contoso_ext.nic == "eth2"
    assert contoso_ext.address == ipaddress.IPv4Interface("203.0.113.10/24")
    assert contoso_ext.gateway == ipaddress.IPv4Address("203.0.113.1")
    assert contoso_ext.floating_ips == {"web-a": ipaddress.IPv4Address("203.0.113.21")}
    fabrikam = fab.routing_domains["fabrikam"].external
    assert fabrikam is not None and fabrikam.floating_ips == {}
    assert [d.name for d in fab.gateway_domains("host3")] == ["contoso", "fabrikam"]
    assert fab.gateway_domains("host1") == ()


def test_a_domain_without_external_has_none():
    fab = load(GATEWAY.replace(FABRIKAM, ""))
    assert fab.routing_domains["fabrikam"].external is None


def test_the_cache_gives_the_external_sections_back(tmp_path, monkeypatch):
    monkeypatch.setenv("OVSNVGRE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("OVSNVGRE_NO_CACHE", raising=False)
    path = tmp_path / "gateway.yaml"
    path.write_text(GATEWAY)
    first = fabric.load(path)
    back = fabric_cache.get(path.read_bytes())
    assert back == first == load(GATEWAY)
    assert back.routing_domains["contoso"].external.floating_ips["web-a"] == \
        ipaddress.IPv4Address("203.0.113.21")


@pytest.mark.parametrize(("text", "expected"), [
    (contoso(host="host9"),
     "f.yaml:18: routing_domains.contoso.external.host: unknown host 'host9'"),
    (contoso(nic="eth1"),
     "f.yaml:18: routing_domains.contoso.external.nic: 'eth1' is the uplink of host 'host3'"),
    (contoso(nic="br-int"),
     "f.yaml:18: routing_domains.contoso.external.nic: 'br-int' is already overlay.bridge"),
    (contoso(address="203.0.113.10"),
     "f.yaml:18: routing_domains.contoso.external.address: '203.0.113.10' is not an IPv4 "
     "address with a prefix length"),
    (contoso(address="203.0.113.255/24"),
     "f.yaml:18: routing_domains.contoso.external.address: 203.0.113.255 is the network or "
     "broadcast address of 203.0.113.0/24"),
    (contoso(address="192.168.3.11/24"),
     "f.yaml:18: routing_domains.contoso.external.address: the external network "
     "192.168.3.0/24 overlaps the PA network 192.168.3.0/24 of host 'host3'"),
    # The underlay's PA network (any host's) is no external network: it stays private.
    (contoso(address="192.168.1.200/24", gateway="192.168.1.254", floating_ips=""),
     "f.yaml:19: routing_domains.contoso.external.address: the external network "
     "192.168.1.0/24 overlaps the PA network 192.168.1.0/24 of host 'host1'"),
    # The namespace routes the domain's own prefixes to the overlay.
    (contoso(address="10.1.1.5/24", gateway="10.1.1.254", floating_ips=""),
     "f.yaml:19: routing_domains.contoso.external.address: the external network "
     "10.1.1.0/24 overlaps the prefix 10.1.1.0/24 of the domain's subnet 'web'"),
    (GATEWAY.replace("gateway: 203.0.113.1}", "gateway: 203.0.113.10}"),
     "f.yaml:23: routing_domains.fabrikam.external.gateway: 203.0.113.10 is already "
     "routing_domains.contoso.external.address"),
    (GATEWAY.replace("address: 203.0.113.11/24, gateway: 203.0.113.1}",
                     "address: 203.0.113.1/24, gateway: 203.0.113.2}"),
     "f.yaml:23: routing_domains.fabrikam.external.address: 203.0.113.1 is already "
     "routing_domains.contoso.external.gateway"),
    (contoso(nic="vnet0").replace("web-a:   {host: host1", "web-a:   {host: host3"),
     "f.yaml:18: routing_domains.contoso.external.nic: 'vnet0' is already the port of VM "
     "'web-a' on host 'host3'"),
    (contoso(gateway="198.51.100.1"),
     "f.yaml:18: routing_domains.contoso.external.gateway: 198.51.100.1 is outside the "
     "external network 203.0.113.0/24"),
    (contoso(gateway="203.0.113.10"),
     "f.yaml:18: routing_domains.contoso.external.gateway: 203.0.113.10 is the domain's own "
     "SNAT address"),
    (contoso(gateway=""),
     "f.yaml:17: routing_domains.contoso.external.gateway: is required"),
    (contoso(colour="blue"),
     "f.yaml:18: routing_domains.contoso.external.colour: unknown key"),
    (contoso(floating_ips="{web-a: 198.51.100.21}"),
     "f.yaml:18: routing_domains.contoso.external.floating_ips.web-a: 198.51.100.21 is "
     "outside the external network 203.0.113.0/24"),
    (contoso(floating_ips="{web-a: 203.0.113.1}"),
     "f.yaml:18: routing_domains.contoso.external.floating_ips.web-a: 203.0.113.1 is the "
     "external gateway"),
    (contoso(floating_ips="{web-a: 203.0.113.10}"),
     "f.yaml:18: routing_domains.contoso.external.floating_ips.web-a: 203.0.113.10 is "
     "already routing_domains.contoso.external.address"),
    (contoso(floating_ips="{web-a: 203.0.113.11}"),
     "f.yaml:23: routing_domains.fabrikam.external.address: 203.0.113.11 is already "
     "routing_domains.contoso.external.floating_ips.web-a"),
    (contoso(floating_ips="{web-a: nowhere}"),
     "f.yaml:18: routing_domains.contoso.external.floating_ips.web-a: 'nowhere' is not an "
     "IPv4 address"),
    (contoso(floating_ips="{nobody: 203.0.113.21}"),
     "f.yaml:18: routing_domains.contoso.external.floating_ips.nobody: unknown VM 'nobody'"),
    (contoso(floating_ips="{front-a: 203.0.113.21}"),
     "f.yaml:18: routing_domains.contoso.external.floating_ips.front-a: VM 'front-a' is not "
     "in routing domain 'contoso' (its subnet is 'front')"),
    (GATEWAY.replace("address: 203.0.113.11/24", "address: 203.0.113.21/24"),
     "f.yaml:23: routing_domains.fabrikam.external.address: 203.0.113.21 is already "
     "routing_domains.contoso.external.floating_ips.web-a"),
    # Two domains on one NIC (a macvlan each on the same wire): one network, one prefix.
    (GATEWAY.replace("address: 203.0.113.11/24", "address: 203.0.113.11/25"),
     "f.yaml:23: routing_domains.fabrikam.external.address: 203.0.113.11/25 is on NIC 'eth2' "
     "of host 'host3' with routing_domains.contoso.external.address's network "
     "203.0.113.0/24: the same network with another prefix length"),
    (GATEWAY.replace(FABRIKAM, "    external: {host: host3}\n"),
     "f.yaml:23: routing_domains.fabrikam.external.address: is required"),
    (GATEWAY.replace(FABRIKAM, "    external: [host3]\n"),
     "f.yaml:23: routing_domains.fabrikam.external: must be a mapping"),
])
def test_each_refusal_is_one_line_with_file_line_and_entry(text, expected):
    assert refuse(text).startswith(expected)


def test_a_routing_domain_name_may_hold_a_dot():
    fab = load(GATEWAY.replace("  contoso:\n", "  con.toso:\n").replace(
        "routing_domain: contoso", "routing_domain: con.toso"))
    ext = fab.routing_domains["con.toso"].external
    assert ext is not None and ext.floating_ips == {"web-a": ipaddress.IPv4Address("203.0.113.21")}


def test_validate_json_shows_each_domains_external_gateway():
    result = subprocess.run([sys.executable, "-m", "ovsnvgre", "validate", "-c",
                             str(Path(__file__).parent.parent / "examples" / "gateway.yaml"),
                             "--json"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    jsonschema.validate(data, VALIDATE)
    domains = {d["name"]: d["external"] for d in data["routing_domains"]}
    assert domains["contoso"] == {"host": "host3", "nic": "eth2", "address": "203.0.113.10/24",
                                  "gateway": "203.0.113.1",
                                  "floating_ips": {"web-a": "203.0.113.21"}}
    assert domains["fabrikam"]["floating_ips"] == {}
