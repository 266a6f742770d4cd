#!/usr/bin/env bash
# Build the Vagrant lab's offline box: Debian 12 from Debian's packages, with
# everything the guests need baked in (Open vSwitch, tcpdump, Python and venv),
# as a libvirt box (compressed qcow2).  Needs root, debootstrap, extlinux,
# sfdisk and qemu-img; about two minutes.
#
#   vagrant/build-box.sh [DIR]       prints the path of the box
#
# The box is cached in DIR (default .vagrant-lab/boxes) under the hash of this
# script and the mirror: a second run with the same inputs builds nothing.
# DEBIAN_MIRROR (default http://deb.debian.org/debian) is where debootstrap
# downloads from.
set -euo pipefail

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
DIR=${1:-$(cd "$(dirname "$0")/.." && pwd)/.vagrant-lab/boxes}
PACKAGES=systemd-sysv,udev,kmod,netbase,procps,linux-image-amd64,openssh-server,sudo,ifupdown,isc-dhcp-client,iproute2,iputils-ping,ethtool,rsync,openvswitch-switch,nftables,tcpdump,python3,python3-venv
DISK_SIZE=4G
PARTITION_START=2048  # sectors of 512 bytes: the partition begins at 1 MiB

die() { echo "build-box.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, loop devices, mount)"
for tool in debootstrap extlinux sfdisk qemu-img losetup mkfs.ext4; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install debootstrap extlinux fdisk qemu-utils)"
done
MBR=/usr/lib/EXTLINUX/mbr.bin
[ -f "$MBR" ] || die "$MBR not found (apt-get install extlinux)"
PUBLIC_KEY=$(ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub 2>/dev/null \
             | head -n 1 || true)
[ -n "$PUBLIC_KEY" ] || die "Vagrant's insecure public key not found (apt-get install vagrant)"

HASH=$( (cat "$0"; echo "$MIRROR") | sha256sum | cut -c1-16)
BOX=$DIR/ovsnvgre-bookworm-$HASH.box
if [ -f "$BOX" ]; then
    echo "$BOX"
    exit 0
fi
mkdir -p "$DIR"

WORK=$(mktemp -d /var/tmp/ovsnvgre-box.XXXXXX)
ROOT=$WORK/root
LOOP=
cleanup() {
    if mountpoint -q "$ROOT" 2>/dev/null; then
        umount -R "$ROOT" || umount -lR "$ROOT" || true
    fi
    [ -z "$LOOP" ] || losetup -d "$LOOP" || true
    rm -rf "$WORK"
}
trap cleanup EXIT

step() { echo "build-box.sh: $*" >&2; }

step "disk: $DISK_SIZE, one ext4 partition"
truncate -s "$DISK_SIZE" "$WORK/disk.raw"
echo "start=$PARTITION_START, type=83, bootable" | sfdisk -q --label dos "$WORK/disk.raw"
dd if="$MBR" of="$WORK/disk.raw" bs=440 count=1 conv=notrunc status=none
# This kernel may have no MSDOS partition support (losetup -P shows nothing):
# the partition is a loop device at its offset instead.
LOOP=$(losetup --find --show --offset $((PARTITION_START * 512)) "$WORK/disk.raw")
UUID=$(cat /proc/sys/kernel/random/uuid)
# extlinux reads neither 64-bit ext4 nor metadata checksums.  No journal: a journal
# left to recover (the mount can outlive our umount while another process's new mount
# namespace holds a copy of it) replays, at the guest's first boot, a copy of block 0
# older than extlinux's boot sector in it, which the next boot then lacks.
mkfs.ext4 -q -L root -U "$UUID" -O ^64bit,^metadata_csum,^has_journal "$LOOP"
mkdir -p "$ROOT"
mount "$LOOP" "$ROOT"

step "debootstrap $SUITE from $MIRROR"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOT" "$MIRROR" >&2

step "configure: network, vagrant user, ssh, boot loader"
echo ovsnvgre-box >"$ROOT/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 ovsnvgre-box\n' >"$ROOT/etc/hosts"
echo "UUID=$UUID / ext4 errors=remount-ro 0 1" >"$ROOT/etc/fstab"
cat >"$ROOT/etc/network/interfaces" <<'EOF'
# eth0 is Vagrant's management NIC; Vagrant appends its private networks.
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

allow-hotplug eth0
iface eth0 inet dhcp
EOF
chroot "$ROOT" useradd --create-home --shell /bin/bash vagrant
install -d -m 700 -o 1000 -g 1000 "$ROOT/home/vagrant/.ssh"
install -m 600 -o 1000 -g 1000 "$PUBLIC_KEY" "$ROOT/home/vagrant/.ssh/authorized_keys"
echo 'vagrant ALL=(ALL) NOPASSWD:ALL' >"$ROOT/etc/sudoers.d/vagrant"
chmod 440 "$ROOT/etc/sudoers.d/vagrant"
# Every VM gets its own host keys and machine id at first boot, not the box's.
rm -f "$ROOT"/etc/ssh/ssh_host_*
mkdir -p "$ROOT/etc/systemd/system/ssh.service.d"
printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' \
    >"$ROOT/etc/systemd/system/ssh.service.d/host-keys.conf"
: >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id" "$ROOT/etc/openvswitch/system-id.conf"
chroot "$ROOT" apt-get clean

KERNEL=$(cd "$ROOT/boot" && ls vmlinuz-* | sort -V | tail -n 1)
INITRD=initrd.img-${KERNEL#vmlinuz-}
[ -f "$ROOT/boot/$INITRD" ] || die "no $INITRD in the image"
mkdir -p "$ROOT/boot/extlinux"
cat >"$ROOT/boot/extlinux/extlinux.conf" <<EOF
DEFAULT debian
TIMEOUT 0
LABEL debian
    LINUX /boot/$KERNEL
    INITRD /boot/$INITRD
    APPEND root=UUID=$UUID ro console=ttyS0 net.ifnames=0 biosdevname=0 quiet
EOF
extlinux --install "$ROOT/boot/extlinux" >&2
# The downloaded packages, deleted, still fill their blocks: free them, so the
# compressed image holds only the files.
fstrim "$ROOT" >&2
sync -f "$ROOT"
umount "$ROOT"
losetup -d "$LOOP"
LOOP=

dd if="$WORK/disk.raw" bs=512 skip="$PARTITION_START" count=1 status=none | grep -qa SYSLINUX \
    || die "the root partition lost extlinux's boot sector"

step "box: compressed qcow2"
qemu-img convert -c -O qcow2 "$WORK/disk.raw" "$WORK/box.img"
printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %d}\n' "${DISK_SIZE%G}" \
    >"$WORK/metadata.json"
tar -C "$WORK" -cf "$WORK/box.tar" metadata.json box.img
mv "$WORK/box.tar" "$BOX"
step "$(du -h "$BOX" | cut -f1) in $BOX"
echo "$BOX"
