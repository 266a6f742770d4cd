"""Generate a fabric at scale: PAs in 198.18.0.0/15, the range RFC 2544 sets aside for
benchmarks (they live only in the benchmark's own namespace)."""

from __future__ import annotations

import argparse


def generate(hosts: int = 100, vsids: int = 20, local_vms: int = 50, vms_per_peer: int = 30,
             shared_per_peer: int = 10, tunnel_ports: str = "per-vsid",
             hosts_per_subnet: int | None = None) -> str:
    """A fabric whose measured host ``h0`` has ``local_vms`` VMs in every VSID and each
    peer ``vms_per_peer`` VMs in ``shared_per_peer`` of them; ``hosts_per_subnet`` hosts
    share each PA /24 (a rack), whose gateway is .1: 1 gives every host its own (the
    default up to 512 hosts; beyond, as few per /24 as the range allows)."""
    if hosts_per_subnet is None:
        hosts_per_subnet = max(1, -(-hosts // 512))
    if hosts > 512 * hosts_per_subnet or hosts_per_subnet > 240:
        raise ValueError("198.18.0.0/15 holds 512 /24s of at most 240 hosts each")
    lines = ["fabric: bench", "datapath_type: netdev",
             f"overlay: {{tunnel_ports: {tunnel_ports}}}", "hosts:"]
    for h in range(hosts):
        rack, slot = divmod(h, hosts_per_subnet)
        net = f"198.{18 + (rack >> 8)}.{rack & 0xff}"
        lines.append(f"  h{h}: {{pa: {net}.{11 + slot}/24, uplink: eth1, gateway: {net}.1}}")
    lines.append("virtual_subnets:")
    for v in range(vsids):
        lines.append(f"  s{v}: {{vsid: {5000 + v}}}")
    lines.append("vms:")
    serial = 0

    def vm(host: int, subnet: int, port: str) -> None:
        nonlocal serial
        serial += 1
        mac = f"02:00:{serial >> 16 & 0xff:02x}:{serial >> 8 & 0xff:02x}:{serial & 0xff:02x}:01"
        # 10.0.0.0/8 + serial: unique (an earlier `or 1` made x.y.0 and x.y.1 collide).
        ca = f"10.{serial >> 16 & 0xff}.{serial >> 8 & 0xff}.{serial & 0xff}/8"
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
    parser.add_argument("--hosts-per-subnet", type=int, default=1)
    args = parser.parse_args()
    print(generate(args.hosts, tunnel_ports=args.tunnel_ports,
                   hosts_per_subnet=args.hosts_per_subnet), end="")
