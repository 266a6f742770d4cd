#!/bin/sh
# Provision one host of a fabric: the same commands a README reader runs on a
# real Debian 12 host.  Used by the Vagrantfile; works on any Debian host.
#
#   provision.sh HOST FABRIC [SOURCE]
#
# HOST is the fabric's name for this machine, FABRIC the fabric file, SOURCE the
# ovsnvgre source tree to install (default: /vagrant, the synced folder).
# SKIP_INSTALL=1 skips the package installation (the tests run only the rest).
set -eu

HOST=${1:?usage: provision.sh HOST FABRIC [SOURCE]}
FABRIC=${2:?usage: provision.sh HOST FABRIC [SOURCE]}
SOURCE=${3:-/vagrant}
OVSNVGRE=${OVSNVGRE:-ovsnvgre}

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    # 1. Open vSwitch and the tools, then ovsnvgre in its own virtualenv.
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends openvswitch-switch iproute2 iputils-ping \
        ethtool python3 python3-venv
    systemctl enable --now openvswitch-switch
    python3 -m venv /opt/ovsnvgre
    /opt/ovsnvgre/bin/pip install -q "$SOURCE"
    ln -sf /opt/ovsnvgre/bin/ovsnvgre /usr/local/bin/ovsnvgre
fi

# 2. Check the fabric before touching anything.
$OVSNVGRE validate -c "$FABRIC"

# 3. This host's VMs: here network namespaces standing in for real guests.
$OVSNVGRE lab guests -c "$FABRIC" --host "$HOST"

# 4. Make the switch match the fabric; a second run must change nothing.
$OVSNVGRE up -c "$FABRIC" --host "$HOST"
$OVSNVGRE up -c "$FABRIC" --host "$HOST" | grep -q "no changes"
echo "provision.sh: host $HOST is up"
