#!/usr/bin/env bash
# make vagrant-test: the Vagrant lab booted for real, offline, and removed again.
#
# Builds (or reuses) the offline box and a wheelhouse of ovsnvgre, starts
# libvirt if it does not run, boots host1 and host2 with the kernel datapath,
# runs the scenario below - the README's Vagrant section is this scenario - and
# removes every trace whatever happens (vagrant/host.sh clean).  Needs root.
#
# OVSNVGRE_LIBVIRT_DRIVER: qemu (default; software emulation, works where KVM
# cannot run a stock guest kernel) or kvm.
set -euo pipefail

cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "vagrant/test.sh: needs root (libvirt, loop devices)" >&2; exit 1; }
PYTHON=${PYTHON:-python3}
STARTED=$(date +%s)
step() { echo "=== vagrant-test [$(($(date +%s) - STARTED)) s] $*"; }

# The lab's Vagrant state stays in .vagrant-lab, apart from a user's own.
export VAGRANT_HOME=$PWD/.vagrant-lab/home
export VAGRANT_DOTFILE_PATH=$PWD/.vagrant-lab/machines
export VAGRANT_DEFAULT_PROVIDER=libvirt
export VAGRANT_CHECKPOINT_DISABLE=1
export OVSNVGRE_LIBVIRT_DRIVER=${OVSNVGRE_LIBVIRT_DRIVER:-qemu}
export OVSNVGRE_LIBVIRT_POOL=ovsnvgre-lab
export OVSNVGRE_WHEELHOUSE=wheelhouse

step "box"
OVSNVGRE_BOX_FILE=$(vagrant/build-box.sh)
export OVSNVGRE_BOX_FILE
step "wheelhouse: ovsnvgre and its dependencies"
rm -rf wheelhouse
"$PYTHON" -m pip wheel -q --wheel-dir wheelhouse . 2>&1 | grep -v "^WARNING: Location" >&2 || true
ls wheelhouse/ovsnvgre-*.whl >/dev/null

step "libvirt"
vagrant/host.sh start
trap 'step "cleaning up"; vagrant destroy -f >/dev/null 2>&1 || true; vagrant/host.sh clean' EXIT

# >>> scenario (the README's Vagrant section shows exactly these lines)
FABRIC=/vagrant/examples/vagrant.yaml

# Boot both guests; each is provisioned by examples/provision.sh.
vagrant up

# 1. The kernel datapath, and the whole matrix from each guest: every VM reaches
#    every VM of its VSID (bridged) and of its routing domain (routed: Red and Green,
#    replies with TTL 63), and no other; each GRE packet on eth1 carries the key of
#    its destination's VSID. Red on host1 to Green on host2, routed by host1's
#    kernel datapath and sent with Green's key:
vagrant ssh host1 --no-tty -c 'sudo ovs-dpctl show' | grep 'system@ovs-system'
vagrant ssh host1 --no-tty -c 'sudo ip netns exec nv-vagrant-v-red-a ping -c 3 10.0.1.12' \
    | grep 'ttl=63'
vagrant ssh host1 -c "sudo ovsnvgre status -c $FABRIC"
vagrant ssh host1 -c "sudo ovsnvgre lab check -c $FABRIC --host host1"
vagrant ssh host2 -c "sudo ovsnvgre lab check -c $FABRIC --host host2"

# The tenant's way out: host2 is its external gateway on eth2, which `lab guests` made
# there as a veth into nv-vagrant-outside, the outside (its router 203.0.113.1, a server
# at 203.0.113.100). Both checks above proved each VM's way out through host2 (ping, UDP,
# TCP, 64 KiB echoed, seen there as 203.0.113.10 or as its floating IP), and from the
# outside the floating IPs of red-a (on host1) and green-b, and no CA. The tenant's port
# on host2's kernel datapath; Green on host1 to the server, through the tunnel and the
# tenant's namespace on host2 (nftables SNAT), counted by status:
vagrant ssh host2 --no-tty -c 'sudo ovs-dpctl show' | grep -E 'port [0-9]+: gw[0-9a-f]{8}'
vagrant ssh host1 --no-tty -c 'sudo ip netns exec nv-vagrant-v-green-a ping -c 3 203.0.113.100' \
    | grep ' 0% packet loss'
vagrant ssh host2 --no-tty -c "sudo ovsnvgre status -c $FABRIC" | tee /dev/stderr \
    | grep -E 'tenant +eth2 +203.0.113.10/24 .* ovsnvgre-vagrant-tenant +up +[1-9][0-9]*$'

# Provisioning again changes nothing.
vagrant provision | tee .vagrant-lab/provision.log
grep 'host host1 is up, no changes' .vagrant-lab/provision.log
grep 'host host2 is up, no changes' .vagrant-lab/provision.log

# 2. A native Linux peer: host2 serves Green (VSID 7001) with the kernel's own
#    gretap, key 7001 << 8 = 0x1b5900, in a Linux bridge; host1 keeps ovsnvgre.
#    `down` gives eth1 its address back, leaves the management NIC eth0 alone,
#    and the guest answers on it throughout (a ping every 0.2 s from this host).
MGMT=$(vagrant ssh-config host2 | awk '$1 == "HostName" {print $2}')
ping -i 0.2 "$MGMT" >.vagrant-lab/mgmt-ping.log &
PINGER=$!
vagrant ssh host2 --no-tty -c 'ip -4 -br addr show eth0' >.vagrant-lab/eth0.before
vagrant ssh host2 -c "sudo ovsnvgre down -c $FABRIC --host host2"
vagrant ssh host2 --no-tty -c 'ip -4 -br addr show eth1' | grep '192.168.56.12/24'
vagrant ssh host2 --no-tty -c 'sudo sh -es' <<'GUEST'
ip link add gre7001 type gretap local 192.168.56.12 remote 192.168.56.11 key 0x1b5900
ip link add br7001 type bridge
ip link set gre7001 master br7001
ip link set vnet2 master br7001
ip link set gre7001 up
ip link set br7001 up
GUEST
vagrant ssh host2 --no-tty -c 'sudo timeout 60 tcpdump -c 4 -n -i eth1 -w /tmp/green.pcap ip proto 47' &
sleep 5
vagrant ssh host1 -c 'sudo ip netns exec nv-vagrant-v-green-a ping -c 5 -i 0.5 -W 2 10.0.1.12'
wait $!
vagrant ssh host2 --no-tty -c 'sudo tcpdump -n -v -r /tmp/green.pcap' | grep 'key=0x1b5900'

# 3. Back to ovsnvgre on host2: `up` moves the address to the tep port again.
vagrant ssh host2 -c 'sudo ip link del gre7001 && sudo ip link del br7001'
vagrant ssh host2 -c "sudo ovsnvgre up -c $FABRIC --host host2"
vagrant ssh host2 --no-tty -c 'ip -4 -br addr show eth0' | diff .vagrant-lab/eth0.before -
kill -INT $PINGER && wait $PINGER || true
grep ' 0% packet loss' .vagrant-lab/mgmt-ping.log
vagrant ssh host1 -c "sudo ovsnvgre lab check -c $FABRIC --host host1"

# 4. A reboot: host2 comes back onto the fabric by itself (examples/ovsnvgre-boot.service
#    runs `ovsnvgre up` after Open vSwitch; ifupdown has put the PA back on eth1 by then,
#    and `up` takes it over again). Within 120 s of the guest answering SSH the whole
#    matrix passes with no manual step.
vagrant reload host2
READY=$(date +%s)
until vagrant ssh host1 -c "sudo ovsnvgre lab check -c $FABRIC --host host1" \
        >.vagrant-lab/after-reboot.log 2>&1; do
    [ $(($(date +%s) - READY)) -lt 120 ] || { cat .vagrant-lab/after-reboot.log; exit 1; }
    sleep 5
done
echo "host2 back on the fabric $(($(date +%s) - READY)) s after it answered SSH"
vagrant ssh host2 --no-tty -c 'sudo systemctl is-active ovsnvgre-boot'
vagrant ssh host2 -c "sudo ovsnvgre lab check -c $FABRIC --host host2"

# 5. One GRE port for every peer (`tunnel_ports: flow`: remote_ip=flow, key=flow) on
#    the kernel datapath, from the same fabric in flow mode. `up` moves a host in
#    place (its per-VSID ports go, gre-flow comes); host1 in flow mode and host2 still
#    per-VSID reach each other, then both in flow mode pass the whole matrix, and
#    status reads each peer and VSID from the flows. The file also hashes each inner
#    flow into the FlowID (`flow_id: hash`): the check sees several FlowIDs on the
#    wire, the VSID bits of every key right.
FLOW=/vagrant/examples/vagrant-flow.yaml
vagrant ssh host1 -c "sudo ovsnvgre up -c $FLOW --host host1"
vagrant ssh host1 -c "sudo ovsnvgre lab check -c $FLOW --host host1"
vagrant ssh host2 -c "sudo ovsnvgre up -c $FLOW --host host2"
vagrant ssh host1 --no-tty -c "sudo ovsnvgre status -c $FLOW" | grep -E 'host2 +192.168.56.12 +7001 +0x1b5900 \+ FlowID hash +gre-flow'
vagrant ssh host1 --no-tty -c "sudo ovsnvgre lab check -c $FLOW --host host1" | tee /dev/stderr | grep -E '\+ ([2-9]|[1-9][0-9]+) hashed FlowIDs'
vagrant ssh host2 -c "sudo ovsnvgre lab check -c $FLOW --host host2"

# `down` still gives eth1 back its address, as before the first `up`. On host2, the
# tenant's gateway host, it also deletes the tenant's namespace (the macvlan on eth2, its
# addresses, nftables rules and conntrack state with it); the host's own nftables
# ruleset is as it was, and the outside reaches the floating IPs no more.
vagrant ssh host2 --no-tty -c 'sudo nft list ruleset' >.vagrant-lab/nft.before
vagrant ssh host2 -c "sudo ovsnvgre down -c $FABRIC --host host2"
vagrant ssh host2 --no-tty -c 'ip -4 -br addr show eth1' | grep '192.168.56.12/24'
vagrant ssh host2 --no-tty -c '! ip netns list | grep ovsnvgre-vagrant-tenant'
vagrant ssh host2 --no-tty -c 'sudo nft list ruleset' | diff .vagrant-lab/nft.before -
vagrant ssh host2 --no-tty -c '! sudo ip netns exec nv-vagrant-outside ping -c 2 -W 1 203.0.113.22'

vagrant destroy -f
# <<< scenario
step "passed"
