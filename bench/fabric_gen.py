"""Generate a fabric at scale: PAs in 198.18.0.0/15, the range RFC 2544 sets aside for
benchmarks (they live only in the benchmark's own namespace)."""

from __future__ import annotations

import argparse
import ipaddress

BENCH_RANGE = ipaddress.IPv4Network("198.18.0.0/15")


def _pa(host: int, hosts: int) -> tuple[str, str]:
    """(PA with prefix, gateway) of host number ``host``: a /24 each up to 256 hosts (the
    converge bench's fabric), a /27 each in larger fabrics (up to 4,096 hosts)."""
    if hosts <= 256:
        return f"198.18.{host}.11/24", f"198.18.{host}.1"
    base = BENCH_RANGE.network_address + host * 32
    return f"{base + 11}/27", str(base + 1)


def generate(hosts: int = 100, vsids: int = 20, local_vms: int = 50, vms_per_peer: int = 30,
             shared_per_peer: int = 10, tunnel_ports: str = "per-vsid") -> str:
    lines = ["fabric: bench", "datapath_type: netdev",
             f"overlay: {{tunnel_ports: {tunnel_ports}}}", "hosts:"]
    for h in range(hosts):
        pa, gateway = _pa(h, hosts)
        lines.append(f"  h{h}: {{pa: {pa}, uplink: eth1, gateway: {gateway}}}")
    lines.append("virtual_subnets:")
    for v in range(vsids):
        lines.append(f"  s{v}: {{vsid: {5000 + v}}}")
    lines.append("vms:")
    serial = 0

    def vm(host: int, subnet: int, port: str) -> None:
        nonlocal serial
        serial += 1
        mac = f"02:00:{serial >> 16 & 0xff:02x}:{serial >> 8 & 0xff:02x}:{serial & 0xff:02x}:01"
        ca = f"10.{serial >> 16 & 0xff}.{serial >> 8 & 0xff}.{serial & 0xff or 1}/8"
        lines.append(f"  vm{serial}: {{host: h{host}, subnet: s{subnet}, port: {port}, "
                     f"mac: \"{mac}\", ca: {ca}}}")

    for index in range(local_vms):  # the measured host h0 has every VSID
        vm(0, index % vsids, f"vnet{index}")
    for host in range(1, hosts):
        shared = [(host + k) % vsids for k in range(shared_per_peer)]
        for index in range(vms_per_peer):
            vm(host, shared[index % len(shared)], f"vnet{index}")
    return "\n".join(lines) + "\n"


def with_extra_vm(text: str) -> str:
    """The same fabric and one more VM on the measured host."""
    return text + ('  vm-extra: {host: h0, subnet: s0, port: vextra, '
                   'mac: "02:ff:00:00:00:01", ca: 10.255.255.1/8}\n')


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--tunnel-ports", default="per-vsid")
    args = parser.parse_args()
    print(generate(args.hosts, tunnel_ports=args.tunnel_ports), end="")
