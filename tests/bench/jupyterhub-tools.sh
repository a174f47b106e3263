#!/bin/sh
# Build (or reuse) the JupyterHub side of the classroom benchmark: a venv with
# JupyterHub and jupyterhub-systemdspawner from PyPI, and configurable-http-proxy
# from npm. Cached by versions, like tests/infra/rootfs.sh caches the rootfs.
# Usage: tests/bench/jupyterhub-tools.sh  -> prints the tools directory on stdout.
#
# The directory is bind-mounted read-only at the same path inside the test
# container (APPLIANCE_BENCH_TOOLS, tests/infra/nspawn.sh), so:
# - the venv is made with the host's Debian /usr/bin/python3: Debian 12's 3.11,
#   the container's interpreter too, and the venv's python is a symlink to it;
# - --system-site-packages: the spawned servers run Debian's notebook 6.4.12
#   (python3-notebook in the container) through jupyterhub-singleuser, so the
#   container's Debian packages must be importable from the venv;
# - --ignore-installed: every dependency of JupyterHub goes into the venv, so
#   what lands there never depends on which Debian packages the *host* has
#   (it resolves against the host's dist-packages, the container's differ);
# - DEBIAN_PINS: the venv's packages come first on sys.path, also for the
#   notebook server, so each library that server shares with JupyterHub is
#   pinned to Debian 12's version where JupyterHub accepts it. Two cannot be:
#   JupyterHub 6 needs tornado >= 6.5 (Debian: 6.2) and jupyter_events needs
#   jsonschema >= 4.18 (Debian: 4.10.3, used by nbformat). Newer traitlets also
#   break notebook 6.4.12 outright (its traittypes call warn() without stacklevel).
# - node is the container's (Debian's nodejs, tests/infra/rootfs-packages.txt);
#   configurable-http-proxy is plain JavaScript, so npm may run on the host.
set -eu

JUPYTERHUB_VERSION=${JUPYTERHUB_VERSION:-6.1.1}
SYSTEMDSPAWNER_VERSION=${SYSTEMDSPAWNER_VERSION:-1.0.2}
# CHP 5 declares node >= 20; Debian 12 ships node 18, which 4.6.3 supports.
CHP_VERSION=${CHP_VERSION:-4.6.3}
CACHE=${APPLIANCE_TEST_CACHE:-/var/cache/notebook-appliance-tests}
DEBIAN_PINS="traitlets==5.5.0 jinja2==3.1.2 markupsafe==2.1.2 packaging==23.0
python-dateutil==2.8.2 prometheus-client==0.16.0 six==1.16.0"
# The script's own hash: a change to what it does (or to DEBIAN_PINS) is a new directory.
SELF=$(sha256sum "$0" | cut -c1-8)
KEY="jupyterhub-$JUPYTERHUB_VERSION-systemdspawner-$SYSTEMDSPAWNER_VERSION-chp-$CHP_VERSION-$SELF"
DIR="$CACHE/bench-tools-$KEY"
log() { echo "jupyterhub-tools: $*" >&2; }

# The rootfs builder has its own lock file.
LOCK=.bench-tools.lock
. "$(dirname "$0")/../infra/venv-cache.sh"
venv_cache_begin
command -v npm >/dev/null || { log "npm missing: apt-get install npm (or make deps)"; exit 2; }
# Built in place, not renamed from a temporary directory: console scripts and
# the venv's pyvenv.cfg name the directory they were made in.
log "venv with jupyterhub==$JUPYTERHUB_VERSION jupyterhub-systemdspawner==$SYSTEMDSPAWNER_VERSION in $DIR"
# env -i: none of the host's pyenv, PYTHONPATH or PIP_* settings leak into the build.
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="${HOME:-/root}" \
    "$PYTHON" -m venv --system-site-packages "$DIR/venv"
printf '%s\n' $DEBIAN_PINS > "$DIR/debian-pins.txt"
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="${HOME:-/root}" \
    "$DIR/venv/bin/python" -m pip install -q --disable-pip-version-check --ignore-installed \
    --constraint "$DIR/debian-pins.txt" \
    "jupyterhub==$JUPYTERHUB_VERSION" \
    "jupyterhub-systemdspawner==$SYSTEMDSPAWNER_VERSION" >&2
log "npm install configurable-http-proxy@$CHP_VERSION"
mkdir -p "$DIR/chp"
npm install --prefix "$DIR/chp" --no-audit --no-fund --omit=dev --loglevel=error \
    "configurable-http-proxy@$CHP_VERSION" >&2
# What was installed, for the benchmark's report.
"$DIR/venv/bin/python" -m pip freeze --all --local > "$DIR/pip-freeze.txt"
chmod -R a+rX "$DIR"
touch "$DIR/.complete"
echo "$DIR"
