"""Fabric texts the tests share."""

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
