"""Fabric texts the tests share, and loading one as the file ``f.yaml``."""

from __future__ import annotations

import pytest

from ovsnvgre import fabric
from ovsnvgre.errors import FabricError


def load(text: str | bytes) -> fabric.Fabric:
    """``text`` loaded as the fabric file ``f.yaml``."""
    return fabric.loads(text, "f.yaml")


def refuse(text: str | bytes) -> str:
    """The one-line refusal (exit status 2) that loading ``text`` gives."""
    with pytest.raises(FabricError) as info:
        load(text)
    message = str(info.value)
    assert "\n" not in message
    assert info.value.exit_code == 2
    return message


TWO_HOSTS = """\
fabric: contoso
datapath_type: netdev
underlay: {bridge: br0, tep_port: tep0}
overlay: {bridge: br-int, key_layout: rfc7637, tunnel_ports: per-vsid}
hosts:
  host1: {pa: 198.51.100.11/24, uplink: eth1, gateway: 198.51.100.1}
  host2: {pa: 203.0.113.11/24, uplink: eth1, gateway: 203.0.113.1}
virtual_subnets:
  red:  {vsid: 5001}
  blue: {vsid: 6001}
vms:
  red-a:  {host: host1, subnet: red,  port: vnet0, mac: "02:00:00:00:50:01", ca: 10.0.0.1/24}
  blue-a: {host: host1, subnet: blue, port: vnet1, mac: "02:00:00:00:60:01", ca: 10.0.0.1/24}
  red-b:  {host: host2, subnet: red,  port: vnet0, mac: "02:00:00:00:50:02", ca: 10.0.0.2/24}
  blue-b: {host: host2, subnet: blue, port: vnet1, mac: "02:00:00:00:60:02", ca: 10.0.0.2/24}
"""

# Two tenants' routing domains (issue 18) with overlapping prefixes: contoso's web, db
# and app, fabrikam's other and data, and an L2-only subnet whose VM holds an address
# that is a gateway in both domains.  host1 has no VM of app: its routed traffic to
# app-b still needs a way to host2 with app's key.
ROUTED = """\
fabric: routed
datapath_type: netdev
overlay: {bridge: br-int, key_layout: rfc7637, tunnel_ports: per-vsid}
hosts:
  host1: {pa: 198.51.100.11/24, uplink: eth1, gateway: 198.51.100.1}
  host2: {pa: 203.0.113.11/24, uplink: eth1, gateway: 203.0.113.1}
routing_domains:
  contoso: {}
  fabrikam: {}
virtual_subnets:
  web:   {vsid: 5001, routing_domain: contoso,  prefix: 10.1.1.0/24}
  db:    {vsid: 5002, routing_domain: contoso,  prefix: 10.1.2.0/24}
  app:   {vsid: 5003, routing_domain: contoso,  prefix: 10.1.3.0/24}
  other: {vsid: 6001, routing_domain: fabrikam, prefix: 10.1.1.0/24}
  data:  {vsid: 6002, routing_domain: fabrikam, prefix: 10.1.2.0/24}
  flat:  {vsid: 7001}
vms:
  web-a:   {host: host1, subnet: web,   port: vnet0, mac: "02:00:00:00:51:01", ca: 10.1.1.10/24}
  db-a:    {host: host1, subnet: db,    port: vnet1, mac: "02:00:00:00:52:01", ca: 10.1.2.10/24}
  other-a: {host: host1, subnet: other, port: vnet2, mac: "02:00:00:00:61:01", ca: 10.1.1.10/24}
  flat-a:  {host: host1, subnet: flat,  port: vnet3, mac: "02:00:00:00:71:01", ca: 10.1.1.1/24}
  db-b:    {host: host2, subnet: db,    port: vnet0, mac: "02:00:00:00:52:02", ca: 10.1.2.20/24}
  app-b:   {host: host2, subnet: app,   port: vnet1, mac: "02:00:00:00:53:02", ca: 10.1.3.20/24}
  data-b:  {host: host2, subnet: data,  port: vnet2, mac: "02:00:00:00:62:02", ca: 10.1.2.20/24}
"""
