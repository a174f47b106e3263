#!/bin/sh
# Boot a cached rootfs under systemd-nspawn, run one command inside it as
# root, power the container off, and exit with the command's status.
#
# Usage: tests/infra/nspawn.sh ROOTFS SRC [COMMAND [ARG...]]
#   ROOTFS  a directory from tests/infra/rootfs.sh (never written to)
#   SRC     a directory bind-mounted read-only at /src (the repository)
#   COMMAND runs with cwd /src and a clean environment that has
#           APPLIANCE_BOOTED_SYSTEMD=1; default: an interactive bash.
# Environment: APPLIANCE_BOOT_TIMEOUT (seconds, default 60).
#              APPLIANCE_ARTIFACTS (optional): a host directory bind-mounted
#              writable at /artifacts, so files a test makes (screenshots) can
#              leave the volatile container; COMMAND then sees
#              APPLIANCE_ARTIFACTS=/artifacts. Unset: no writable bind at all.
#              APPLIANCE_BENCH_TOOLS (optional): a host directory bind-mounted
#              read-only at the same path (tests/bench/jupyterhub-tools.sh:
#              its venv and node_modules name their own path); COMMAND then
#              sees APPLIANCE_BENCH_TOOLS=DIR.
#              APPLIANCE_PYPI_TOOLS (optional): the same for the directory of
#              tests/infra/pypi-tools.sh (third-party tools the tests run).
#
# The container shares the host's network (no --private-network), so a port
# bound inside is reachable on the host's 127.0.0.1. Its cgroup v1
# controllers are read-only: MemoryMax/CPUQuota are accepted, not enforced.
set -eu

if [ $# -lt 2 ]; then
    echo "usage: $0 ROOTFS SRC [COMMAND [ARG...]]" >&2
    exit 2
fi
ROOTFS=$1
SRC=$(readlink -f "$2")
shift 2
[ $# -gt 0 ] || set -- bash -l
BOOT_TIMEOUT=${APPLIANCE_BOOT_TIMEOUT:-60}
ARTIFACTS=${APPLIANCE_ARTIFACTS:-}
BENCH_TOOLS=${APPLIANCE_BENCH_TOOLS:-}
PYPI_TOOLS=${APPLIANCE_PYPI_TOOLS:-}
log() { echo "nspawn: $*" >&2; }

[ -f "$ROOTFS/.complete" ] || { log "$ROOTFS is not a finished rootfs (run tests/infra/rootfs.sh)"; exit 2; }
if [ -n "$ARTIFACTS" ]; then
    mkdir -p "$ARTIFACTS"
    ARTIFACTS=$(readlink -f "$ARTIFACTS")
fi
if [ -n "$BENCH_TOOLS" ]; then
    [ -d "$BENCH_TOOLS" ] || { log "APPLIANCE_BENCH_TOOLS=$BENCH_TOOLS is not a directory"; exit 2; }
    BENCH_TOOLS=$(readlink -f "$BENCH_TOOLS")
fi
if [ -n "$PYPI_TOOLS" ]; then
    [ -d "$PYPI_TOOLS" ] || { log "APPLIANCE_PYPI_TOOLS=$PYPI_TOOLS is not a directory"; exit 2; }
    PYPI_TOOLS=$(readlink -f "$PYPI_TOOLS")
fi
command -v systemd-nspawn >/dev/null || { log "systemd-nspawn missing: apt-get install systemd-container (or make deps)"; exit 2; }

WORK=$(mktemp -d /tmp/appliance-nspawn.XXXXXX)
# A unique machine name: nspawn keeps per-machine state under
# /run/systemd/nspawn/propagate/NAME even with --register=no.
MACHINE=appliance-test-$$
NSPAWN_PID=
INIT_PID=

stop_container() {
    [ -n "$NSPAWN_PID" ] || return 0
    # SIGTERM makes nspawn ask the container's systemd to power off
    # (SIGRTMIN+3, see --kill-signal in systemd-nspawn(1)); bounded, then SIGKILL.
    kill -TERM "$NSPAWN_PID" 2>/dev/null || true
    i=0
    while kill -0 "$NSPAWN_PID" 2>/dev/null && [ $i -lt 150 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if kill -0 "$NSPAWN_PID" 2>/dev/null; then
        log "container did not power off in 15 s; killing it"
        # Killing PID 1 of a PID namespace kills everything in it.
        [ -z "$INIT_PID" ] || kill -KILL "$INIT_PID" 2>/dev/null || true
        kill -KILL "$NSPAWN_PID" 2>/dev/null || true
    fi
    wait "$NSPAWN_PID" 2>/dev/null || true
    NSPAWN_PID=
}
cleanup() {
    stop_container
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail_boot() {
    log "$1"
    log "last lines of the container console ($WORK/console.log):"
    tail -n 30 "$WORK/console.log" >&2 || true
    exit 3
}

start=$(date +%s.%N)
# --volatile=overlay: the rootfs is the read-only lower layer of an overlay
# whose upper layer is a tmpfs inside the container, so the cache stays clean
# and nothing is left to remove even if we are killed.
# --register=no: there is no systemd-machined on the host (PID 1 is not
# systemd); without it nspawn fails with "Failed to open system bus".
# setsid: a Ctrl-C on the terminal must reach the test command, not nspawn.
# --pdeathsig: if this script is killed outright, nspawn still gets SIGTERM
# and powers the container off instead of leaving it running.
setsid setpriv --pdeathsig TERM systemd-nspawn --quiet \
    --directory="$ROOTFS" --machine="$MACHINE" \
    --boot --register=no --keep-unit --volatile=overlay \
    --bind-ro="$SRC:/src" \
    ${ARTIFACTS:+--bind="$ARTIFACTS:/artifacts"} \
    ${BENCH_TOOLS:+--bind-ro="$BENCH_TOOLS"} \
    ${PYPI_TOOLS:+--bind-ro="$PYPI_TOOLS"} \
    --console=passive \
    </dev/null >"$WORK/console.log" 2>&1 &
NSPAWN_PID=$!
# Until exec, the child is our shell, setsid or setpriv; it must become nspawn
# itself (setsid only forks when the caller leads a process group).
i=0
until [ "$(cat /proc/$NSPAWN_PID/comm 2>/dev/null)" = systemd-nspawn ]; do
    [ $i -lt 40 ] || fail_boot "pid $NSPAWN_PID did not become systemd-nspawn"
    sleep 0.05
    i=$((i + 1))
done

deadline=$(( $(date +%s) + BOOT_TIMEOUT ))
# The container's PID 1 is nspawn's child.
while [ -z "$INIT_PID" ]; do
    kill -0 "$NSPAWN_PID" 2>/dev/null || fail_boot "systemd-nspawn exited during boot"
    [ "$(date +%s)" -lt "$deadline" ] || fail_boot "no container init after ${BOOT_TIMEOUT}s"
    INIT_PID=$(pgrep -P "$NSPAWN_PID" -x systemd || true)
    [ -n "$INIT_PID" ] || sleep 0.05
done

# is-system-running --wait fails until systemd's private socket exists;
# then it blocks until boot finishes. "degraded" still means booted.
while :; do
    kill -0 "$NSPAWN_PID" 2>/dev/null || fail_boot "systemd-nspawn exited during boot"
    left=$(( deadline - $(date +%s) ))
    [ "$left" -gt 0 ] || fail_boot "container systemd not up after ${BOOT_TIMEOUT}s (state: ${state:-unknown})"
    state=$(timeout "$left" nsenter -t "$INIT_PID" -a \
        systemctl is-system-running --wait 2>/dev/null) || true
    case $state in
        running) break ;;
        degraded)
            log "container booted degraded; failed units:"
            nsenter -t "$INIT_PID" -a systemctl --failed --no-pager --no-legend >&2 || true
            break ;;
    esac
    sleep 0.1
done
log "booted in $(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $start }")s (pid $INIT_PID, machine $MACHINE)"

# nsenter -a: every namespace of the container's PID 1, so the command sees
# its mounts, PIDs and system bus; env -i: none of the host's PATH/pyenv.
rc=0
nsenter -t "$INIT_PID" -a \
    env -i --chdir=/src \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" \
    APPLIANCE_BOOTED_SYSTEMD=1 \
    ${ARTIFACTS:+APPLIANCE_ARTIFACTS=/artifacts} \
    ${BENCH_TOOLS:+APPLIANCE_BENCH_TOOLS="$BENCH_TOOLS"} \
    ${PYPI_TOOLS:+APPLIANCE_PYPI_TOOLS="$PYPI_TOOLS"} \
    "$@" || rc=$?
exit "$rc"
