#!/usr/bin/env bash
# The Vagrant lab's host side: libvirt's daemons, the lab's storage pool, and
# the removal of every trace the lab leaves.  Needs root.
#
#   vagrant/host.sh start   start virtlogd and libvirtd unless they run (a machine
#                           without systemd as PID 1), make the storage pool
#   vagrant/host.sh check   fail if a libvirt object of the lab's names exists
#   vagrant/host.sh clean   destroy the lab's VMs, networks, volumes and pool,
#                           libvirt's iptables chains if the lab made them, and
#                           stop the daemons this script started (by pid)
#
# Everything the lab makes has a name of its own (ovsnvgre-host1, ovsnvgre-host2,
# networks ovsnvgre-lab and ovsnvgre-mgmt, pool ovsnvgre-lab); what this script
# started or found missing is recorded in .vagrant-lab/state, and `clean` undoes
# only that.
set -euo pipefail

cd "$(dirname "$0")/.."
STATE=$PWD/.vagrant-lab/state
POOL=ovsnvgre-lab
POOL_DIR=/var/lib/libvirt/images/ovsnvgre-lab
DOMAINS="ovsnvgre-host1 ovsnvgre-host2"
NETWORKS="ovsnvgre-lab ovsnvgre-mgmt"
VIRSH="virsh -q -c qemu:///system"

say() { echo "host.sh: $*" >&2; }
die() { say "$*"; exit 1; }

running() {  # running NAME PIDFILE: the pid in PIDFILE is alive and is NAME
    local pid
    pid=$(cat "$2" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] \
        && ! awk '{exit $3 != "Z"}' "/proc/$pid/stat" 2>/dev/null  # a zombie is gone
}

any_running() {  # any_running NAME: a live (not zombie) process of that name
    ps -C "$1" -o stat= | grep -qv '^Z'
}

stop_pid() {  # stop_pid NAME PIDFILE: SIGTERM, then SIGKILL after 10 s
    local pid
    running "$1" "$2" || return 0
    pid=$(cat "$2")
    say "stopping $1 (pid $pid)"
    kill "$pid"
    for _ in $(seq 50); do
        running "$1" "$2" || return 0
        sleep 0.2
    done
    kill -9 "$pid" 2>/dev/null || true
}

libvirt_chains() {  # the LIBVIRT_* chains of every table, one "tool table chain" a line
    local tool table
    for tool in iptables ip6tables; do
        command -v "$tool" >/dev/null || continue
        for table in filter nat mangle; do
            "$tool" -w -t "$table" -S 2>/dev/null | awk -v t="$tool" -v tb="$table" \
                '$1 == "-N" && $2 ~ /^LIBVIRT_/ {print t, tb, $2}'
        done
    done
}

start_daemons() {
    mkdir -p "$STATE"
    if [ ! -f "$STATE/chains-before" ]; then
        libvirt_chains >"$STATE/chains-before"
    fi
    if ! any_running virtlogd; then
        virtlogd -d -p "$STATE/virtlogd.pid"
        say "started virtlogd (pid $(cat "$STATE/virtlogd.pid"))"
    fi
    if ! any_running libvirtd; then
        # libvirtd double-forks the qemu processes it starts (also the short
        # ones that probe qemu's capabilities), so they become children of PID
        # 1; where that is no init that reaps, they stay zombies and libvirtd
        # waits for each to vanish.  tini -s, a subreaper, reaps them instead.
        command -v tini >/dev/null || die "tini not found (apt-get install tini)"
        setsid tini -s -- libvirtd -p "$STATE/libvirtd.pid" </dev/null \
            >>"$STATE/libvirtd.log" 2>&1 &
        echo $! >"$STATE/tini.pid"
        for _ in $(seq 50); do
            [ -s "$STATE/libvirtd.pid" ] && break
            sleep 0.2
        done
        for _ in $(seq 50); do
            $VIRSH version >/dev/null 2>&1 && break
            sleep 0.2
        done
        say "started libvirtd (pid $(cat "$STATE/libvirtd.pid"))"
        # Networks the daemon autostarted are not the lab's: note them, so that
        # `clean` stops them again with the daemon it started.
        $VIRSH net-list --name >"$STATE/autostarted-networks"
    fi
    $VIRSH version >/dev/null || die "libvirtd does not answer on qemu:///system"
}

make_pool() {
    if ! $VIRSH pool-info "$POOL" >/dev/null 2>&1; then
        say "storage pool $POOL in $POOL_DIR"
        $VIRSH pool-define-as "$POOL" dir --target "$POOL_DIR" >/dev/null
        $VIRSH pool-build "$POOL" >/dev/null
        touch "$STATE/pool-created"
    fi
    $VIRSH pool-start "$POOL" >/dev/null 2>&1 || true
}

check_names() {
    local name found=""
    for name in $DOMAINS; do
        if $VIRSH dominfo "$name" >/dev/null 2>&1; then found="$found domain $name,"; fi
    done
    for name in $NETWORKS; do
        if $VIRSH net-info "$name" >/dev/null 2>&1; then found="$found network $name,"; fi
    done
    if $VIRSH pool-info "$POOL" >/dev/null 2>&1 && [ ! -f "$STATE/pool-created" ]; then
        found="$found pool $POOL,"
    fi
    [ -z "$found" ] || die "libvirt already has${found%,}: another Vagrant lab of this tree runs" \
        "(vagrant destroy -f, or vagrant/host.sh clean if make vagrant-test made it)"
}

clean() {
    local name volume
    if any_running libvirtd && $VIRSH version >/dev/null 2>&1; then
        for name in $DOMAINS; do
            if $VIRSH dominfo "$name" >/dev/null 2>&1; then
                say "removing VM $name"
                $VIRSH destroy "$name" >/dev/null 2>&1 || true
                $VIRSH undefine "$name" --remove-all-storage >/dev/null 2>&1 \
                    || $VIRSH undefine "$name" >/dev/null
            fi
        done
        for name in $NETWORKS; do
            if $VIRSH net-info "$name" >/dev/null 2>&1; then
                say "removing network $name"
                $VIRSH net-destroy "$name" >/dev/null 2>&1 || true
                $VIRSH net-undefine "$name" >/dev/null
            fi
        done
        if [ -f "$STATE/pool-created" ] && $VIRSH pool-info "$POOL" >/dev/null 2>&1; then
            $VIRSH pool-start "$POOL" >/dev/null 2>&1 || true
            for volume in $($VIRSH vol-list "$POOL" 2>/dev/null | awk '{print $1}'); do
                say "removing volume $volume"
                $VIRSH vol-delete "$volume" --pool "$POOL" >/dev/null
            done
            say "removing storage pool $POOL"
            $VIRSH pool-destroy "$POOL" >/dev/null 2>&1 || true
            $VIRSH pool-delete "$POOL" >/dev/null 2>&1 || true
            $VIRSH pool-undefine "$POOL" >/dev/null
            rm -f "$STATE/pool-created"
        fi
        if [ -f "$STATE/autostarted-networks" ]; then
            while read -r name; do
                [ -z "$name" ] || $VIRSH net-destroy "$name" >/dev/null 2>&1 || true
            done <"$STATE/autostarted-networks"
        fi
    fi
    stop_pid libvirtd "$STATE/libvirtd.pid"
    stop_pid tini "$STATE/tini.pid"
    stop_pid virtlogd "$STATE/virtlogd.pid"
    rm -f "$STATE/libvirtd.pid" "$STATE/tini.pid" "$STATE/virtlogd.pid" \
        "$STATE/autostarted-networks" "$STATE/libvirtd.log"
    if [ -f "$STATE/chains-before" ] && ! any_running libvirtd; then
        remove_new_chains "$STATE/chains-before"
        rm -f "$STATE/chains-before"
    fi
    rm -rf .vagrant-lab/home .vagrant-lab/machines
}

remove_new_chains() {  # the LIBVIRT_* chains that were not there before the lab
    local new tool table chain rule
    new=$(libvirt_chains | grep -vxF -f "$1" || true)
    [ -n "$new" ] || return 0
    # First every jump into them and their rules, then the chains themselves.
    while read -r tool table chain; do
        "$tool" -w -t "$table" -S | awk -v c="$chain" '$1 == "-A" && $NF == c && $(NF-1) == "-j"' \
            | while read -r rule; do
                # shellcheck disable=SC2086
                "$tool" -w -t "$table" ${rule/-A/-D}
            done
        "$tool" -w -t "$table" -F "$chain"
    done <<<"$new"
    while read -r tool table chain; do
        "$tool" -w -t "$table" -X "$chain"
        say "removed $tool chain $chain ($table)"
    done <<<"$new"
}

case "${1:-}" in
    start) start_daemons; check_names; make_pool ;;
    check) start_daemons; check_names ;;
    clean) clean ;;
    *) die "usage: vagrant/host.sh start|check|clean" ;;
esac
