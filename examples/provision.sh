#!/bin/sh
# Provision one host of a fabric: the same commands a README reader runs on a
# real Debian 12 host.  Used by the Vagrantfile; works on any Debian host.
#
#   provision.sh HOST FABRIC [SOURCE]
#
# HOST is the fabric's name for this machine, FABRIC the fabric file, SOURCE the
# ovsnvgre source tree to install (default: /vagrant, the synced folder).
# SKIP_INSTALL=1 skips the package installation (the tests run only the rest).
# WHEELHOUSE=DIR installs ovsnvgre from the wheels in DIR, without a network
# (the Vagrant lab's offline box); Debian packages already installed are not
# fetched again.
set -eu

HOST=${1:?usage: provision.sh HOST FABRIC [SOURCE]}
FABRIC=${2:?usage: provision.sh HOST FABRIC [SOURCE]}
SOURCE=${3:-/vagrant}
OVSNVGRE=${OVSNVGRE:-ovsnvgre}

PACKAGES="openvswitch-switch iproute2 iputils-ping ethtool python3 python3-venv"

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    # 1. Open vSwitch and the tools, then ovsnvgre in its own virtualenv.
    export DEBIAN_FRONTEND=noninteractive
    MISSING=""
    for package in $PACKAGES; do
        dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q "ok installed" \
            || MISSING="$MISSING $package"
    done
    if [ -n "$MISSING" ]; then
        apt-get update -q
        # shellcheck disable=SC2086
        apt-get install -y -q --no-install-recommends $MISSING
    fi
    systemctl enable --now openvswitch-switch
    [ -x /opt/ovsnvgre/bin/pip ] || python3 -m venv /opt/ovsnvgre
    if [ -n "${WHEELHOUSE:-}" ]; then
        /opt/ovsnvgre/bin/pip install -q --no-index --find-links "$WHEELHOUSE" ovsnvgre
    else
        /opt/ovsnvgre/bin/pip install -q "$SOURCE"
    fi
    ln -sf /opt/ovsnvgre/bin/ovsnvgre /usr/local/bin/ovsnvgre
    # The host comes back onto the fabric by itself after a reboot: `ovsnvgre up` at
    # boot (examples/ovsnvgre-boot.service), after this host's VMs - here the
    # namespaces `lab guests` makes, which a reboot loses.
    install -d /etc/ovsnvgre /etc/systemd/system/ovsnvgre-boot.service.d
    install -m 644 "$FABRIC" /etc/ovsnvgre/fabric.yaml
    echo "OVSNVGRE_CONFIG=/etc/ovsnvgre/fabric.yaml" >/etc/default/ovsnvgre
    install -m 644 "$(dirname "$0")/ovsnvgre-boot.service" /etc/systemd/system/ \
        2>/dev/null || install -m 644 "$SOURCE/examples/ovsnvgre-boot.service" /etc/systemd/system/
    printf '[Service]\nExecStartPre=/usr/local/bin/ovsnvgre lab guests -c %s --host %s\n' \
        /etc/ovsnvgre/fabric.yaml "$HOST" \
        >/etc/systemd/system/ovsnvgre-boot.service.d/guests.conf
    systemctl daemon-reload
    systemctl enable ovsnvgre-boot
fi

# 2. Check the fabric before touching anything.
$OVSNVGRE validate -c "$FABRIC"

# 3. This host's VMs: here network namespaces standing in for real guests.
$OVSNVGRE lab guests -c "$FABRIC" --host "$HOST"

# 4. Make the switch match the fabric; a second run must change nothing.
FIRST=$($OVSNVGRE up -c "$FABRIC" --host "$HOST")
echo "$FIRST"
$OVSNVGRE up -c "$FABRIC" --host "$HOST" | grep -q "no changes"
if echo "$FIRST" | grep -q "no changes"; then
    echo "provision.sh: host $HOST is up, no changes"
else
    echo "provision.sh: host $HOST is up"
fi
