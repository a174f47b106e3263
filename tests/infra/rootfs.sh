#!/bin/sh
# Build (or reuse) a Debian 12 root filesystem with systemd and every
# Debian package the appliance and its tests need. Cached by package list.
# Usage: tests/infra/rootfs.sh  -> prints the rootfs directory on stdout.
set -eu

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${APPLIANCE_TEST_CACHE:-/var/cache/notebook-appliance-tests}
HERE=$(dirname "$(readlink -f "$0")")
PACKAGES=$(grep -v '^#' "$HERE/rootfs-packages.txt" | tr '\n' ' ')
# Bump the suffix when what this script does changes (v3: /etc/hosts).
KEY=$(printf '%s' "$PACKAGES v3" | sha256sum | cut -c1-16)
ROOT="$CACHE/rootfs-$KEY"

if [ -f "$ROOT/.complete" ]; then
    echo "$ROOT"
    exit 0
fi

mkdir -p "$CACHE"
# One builder at a time (flock(1)): a second one would rm -rf the first one's
# tree while the host's /dev is bind-mounted into it.
exec 9>"$CACHE/.lock"
flock 9
if [ -f "$ROOT/.complete" ]; then
    echo "$ROOT"
    exit 0
fi
# A builder killed mid-way may have left its bind mounts; never recurse into them.
umount "$ROOT.tmp/proc" "$ROOT.tmp/dev" 2>/dev/null || true
rm -rf --one-file-system "$ROOT" "$ROOT.tmp"
log() { echo "rootfs: $*" >&2; }
log "debootstrap bookworm into $ROOT.tmp (about a minute)"
debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,libpam-systemd,python3 \
    bookworm "$ROOT.tmp" "$MIRROR" >&2

# Nothing may start inside the chroot while packages install.
printf '#!/bin/sh\nexit 101\n' > "$ROOT.tmp/usr/sbin/policy-rc.d"
chmod 755 "$ROOT.tmp/usr/sbin/policy-rc.d"
mount --bind /proc "$ROOT.tmp/proc"
mount --bind /dev "$ROOT.tmp/dev"
trap 'umount "$ROOT.tmp/proc" "$ROOT.tmp/dev" 2>/dev/null || true' EXIT
log "apt-get install $PACKAGES"
chroot "$ROOT.tmp" sh -c "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $PACKAGES && apt-get clean" >&2
umount "$ROOT.tmp/proc" "$ROOT.tmp/dev"
trap - EXIT
rm -f "$ROOT.tmp/usr/sbin/policy-rc.d"
echo "appliance-test" > "$ROOT.tmp/etc/hostname"
# debootstrap writes no /etc/hosts, and without one "localhost" does not resolve
# (chromedriver's clients connect to http://localhost:PORT).
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$ROOT.tmp/etc/hosts"
touch "$ROOT.tmp/.complete"
mv "$ROOT.tmp" "$ROOT"
echo "$ROOT"
