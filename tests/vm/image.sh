#!/bin/sh
# Build (or reuse) a bootable Debian 12 VM image: debootstrap, a kernel, sshd
# with a throwaway root key, and every runtime dependency of the .deb, so that
# the .deb installs inside the VM with no network. Cached by package list.
# Usage: tests/vm/image.sh  -> prints the image directory on stdout, holding
#   disk.img (raw ext4, never written to: boot a qcow2 overlay), vmlinuz,
#   initrd.img, id_ed25519 (root's ssh key).
set -eu

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${APPLIANCE_TEST_CACHE:-/var/cache/notebook-appliance-tests}
HERE=$(dirname "$(readlink -f "$0")")
PACKAGES=$(grep -v '^#' "$HERE/image-packages.txt" | tr '\n' ' ')
# Bump the suffix when the image's setup below changes.
KEY=$(printf '%s' "$PACKAGES vm2" | sha256sum | cut -c1-16)
IMG="$CACHE/vm-$KEY"
ROOT="$IMG.tmp/root"

if [ -f "$IMG/.complete" ]; then
    echo "$IMG"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "image: must run as root (debootstrap, chroot)" >&2
    exit 2
fi

log() { echo "image: $*" >&2; }
mkdir -p "$CACHE"
# One builder at a time (flock(1)): a second one would delete the first one's tree.
exec 9>"$CACHE/.vm-lock"
flock 9
if [ -f "$IMG/.complete" ]; then
    echo "$IMG"
    exit 0
fi
# A run killed half-way may have left /proc mounted in the tree: unmount it
# first, and never let rm cross into another file system.
umount "$ROOT/proc" 2>/dev/null || true
rm -rf --one-file-system "$IMG" "$IMG.tmp"
mkdir -p "$IMG.tmp"
log "debootstrap bookworm into $ROOT (about a minute)"
debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,libpam-systemd,python3 \
    bookworm "$ROOT" "$MIRROR" >&2

# Nothing may start inside the chroot while packages install.
printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"
chmod 755 "$ROOT/usr/sbin/policy-rc.d"
# Only /proc is mounted: debootstrap made the device nodes apt needs, and a
# bind-mounted host /dev would be emptied by any rm -rf of a leftover tree.
mount -t proc proc "$ROOT/proc"
trap 'umount "$ROOT/proc" 2>/dev/null || true' EXIT
log "apt-get install $PACKAGES (a few minutes)"
# The apt lists are removed afterwards: the VM has no network, and with no
# lists apt resolves `apt install ./x.deb` against installed packages only
# (it would otherwise try to download the .deb's Recommends, and fail).
chroot "$ROOT" sh -c "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $PACKAGES && apt-get clean && rm -rf /var/lib/apt/lists/*" >&2
# Boot-time settings: enabled here, offline (systemctl works in a chroot).
chroot "$ROOT" systemctl enable systemd-networkd >&2
# apt's timers would only contend for the dpkg lock with the test's apt.
chroot "$ROOT" systemctl mask apt-daily.timer apt-daily-upgrade.timer >&2
umount "$ROOT/proc"
trap - EXIT
rm -f "$ROOT/usr/sbin/policy-rc.d"

echo "appliance-vm" > "$ROOT/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 appliance-vm\n' > "$ROOT/etc/hosts"
echo "/dev/vda / ext4 defaults 0 1" > "$ROOT/etc/fstab"
# Empty: each boot makes up its own machine id (every run boots a fresh overlay).
: > "$ROOT/etc/machine-id"
# qemu's user network (slirp): the guest is always 10.0.2.15; the host's
# forwarded ports arrive there. Static, so no DHCP wait at boot.
cat > "$ROOT/etc/systemd/network/10-qemu.network" <<'NET'
[Match]
Name=en* eth*

[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
NET
# A throwaway key, only ever used against this image's VMs on 127.0.0.1.
ssh-keygen -q -t ed25519 -N '' -C appliance-vm-test -f "$IMG.tmp/id_ed25519"
install -d -m 700 "$ROOT/root/.ssh"
install -m 600 "$IMG.tmp/id_ed25519.pub" "$ROOT/root/.ssh/authorized_keys"

cp "$ROOT"/boot/vmlinuz-* "$IMG.tmp/vmlinuz"
cp "$ROOT"/boot/initrd.img-* "$IMG.tmp/initrd.img"
log "making the ext4 image"
truncate -s 4G "$IMG.tmp/disk.img"
mkfs.ext4 -q -L root -d "$ROOT" "$IMG.tmp/disk.img"
rm -rf --one-file-system "$ROOT"
touch "$IMG.tmp/.complete"
mv "$IMG.tmp" "$IMG"
log "built $IMG"
echo "$IMG"
