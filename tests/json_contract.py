"""The JSON each command prints with --json: the keys scripts may rely on (a contract).

A key removed or retyped here is a breaking change for the scripts that consume it;
tests/test_json_contract.py validates every command's real output against these
schemas (additional keys are allowed: adding is not breaking).
"""

from __future__ import annotations

from typing import Any


def obj(required: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An object schema that requires every key of ``required``."""
    return {"type": "object", "required": sorted(required), "properties": required, **extra}


STR, INT, BOOL, NUM = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}, \
    {"type": "number"}
OPT_STR, OPT_INT = {"type": ["string", "null"]}, {"type": ["integer", "null"]}
STRS = {"type": "array", "items": STR}

# A routing domain (issue 18): validate lists every one and each subnet's VMs, status
# those with a VM on the host and that host's VMs.
ROUTING_DOMAINS = {"type": "array", "items": obj({
    "name": STR, "router_mac": STR, "subnets": {"type": "array", "items": obj({
        "name": STR, "vsid": INT, "prefix": STR, "gateway": STR, "vms": STRS})},
    "external": {"anyOf": [{"type": "null"}, obj({
        "host": STR, "nic": STR, "address": STR, "gateway": STR,
        "floating_ips": {"type": "object", "additionalProperties": STR}})]}})}

VALIDATE = obj({"fabric": STR, "file": STR, "valid": BOOL, "hosts": INT,
                "virtual_subnets": INT, "vms": INT, "datapath_type": STR, "key_layout": STR,
                "tunnel_ports": STR, "flow_id": STR, "warnings": STRS, "router_mac": STR,
                "routing_domains": ROUTING_DOMAINS})

PLAN = obj({"host": STR, "changes": STRS, "notes": STRS, "blockers": STRS,
            "ovsdb_changes": INT, "kernel_changes": INT,
            "flow_changes": obj({"add": INT, "delete": INT, "per_table": {"type": "object"},
                                 "flows": STRS})})

CHECK = obj({"seconds": NUM, "targets": {"type": "array", "items": obj({
    "address": STR, "why": STR, "required": BOOL, "answered_before": BOOL,
    "answered_after": BOOL, "how": OPT_STR})}})

RUN = obj({**PLAN["properties"], "changed": BOOL, "ovsdb_writes": INT, "kernel_changes": INT,
           "flow_mods": INT, "refused": {"type": "object"},
           "underlay_check": {"anyOf": [{"type": "null"}, CHECK]}})

STATUS = obj({
    "host": obj({"name": STR, "pa": STR, "pa_on": OPT_STR, "bridge": STR,
                 "integration_bridge": STR, "tep_port": STR, "uplink": OPT_STR,
                 "gateway": OPT_STR, "underlay_mtu": OPT_INT}),
    "tunnels": {"type": "array", "items": obj({
        "port": STR, "peer": OPT_STR, "remote_ip": OPT_STR, "vsid": OPT_INT, "key": STR,
        "flow_id": {"enum": ["zero", "hash"]}, "ofport": OPT_INT, "state": STR,
        "bfd": {"type": ["object", "null"]}})},
    "vms": {"type": "array", "items": obj({
        "name": STR, "port": STR, "vsid": INT, "mac": STR, "ca": STR, "ofport": OPT_INT,
        "state": STR, "mtu": OPT_INT, "rx_packets": INT, "tx_packets": INT})},
    "flows": {"type": "object", "additionalProperties": INT},
    "warnings": STRS, "drift": STRS, "converged": BOOL, "notes": STRS,
    "routing_domains": ROUTING_DOMAINS,
    "external": {"type": "array", "items": obj({
        "domain": STR, "namespace": STR, "port": STR, "nic": STR, "address": STR,
        "gateway": STR, "floating_ips": {"type": "object", "additionalProperties": STR},
        "state": STR, "translations": OPT_INT})}})

TRACE = obj({"host": STR, "from": STR, "to": STR, "destination": OPT_STR, "proto": STR,
             "flow": STR, "verdict": STR, "outputs": {"type": "array", "items": obj({
                 "kind": STR, "port": STR})}})
