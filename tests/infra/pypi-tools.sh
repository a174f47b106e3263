#!/bin/sh
# Build (or reuse) the third-party tools the tests run against, from PyPI,
# unmodified, a venv each:
# - venv/: jupyterhub-idle-culler (test_idle_culler.py, and the VM tier's guest);
# - singleuser/: jupyterhub-singleuser with JupyterLab 4 (test_singleuser.py);
# - hub/: JupyterHub alone, the HubOAuth of whoami-oauth (test_hub_oauth.py, and
#   the VM tier's guest: small enough to copy in);
# - nbgrader/: the same as singleuser/ with nbgrader, the servers and formgrader
#   service of test_nbgrader.py (a venv of its own: its extensions load into every
#   server that runs from it).
# Cached by their pinned versions and this script's hash, like tests/infra/rootfs.sh
# caches the rootfs.
# Usage: tests/infra/pypi-tools.sh  -> prints the tools directory on stdout.
#
# Built on the host, not in the container: the host's pip is the one set up to
# reach PyPI (its index, proxy and CA bundle); the container has no pip and may
# not trust a proxy's certificate. tests/run binds the directory read-only at
# the same path inside the container (APPLIANCE_PYPI_TOOLS, nspawn.sh), so:
# - the venv is made with the host's Debian /usr/bin/python3: Debian 12's 3.11,
#   the container's interpreter too, and the venv's python is a symlink to it;
# - no --system-site-packages: the tool's dependencies (tornado, traitlets,
#   python-dateutil, packaging) come from PyPI into the venv, so what runs
#   never depends on which Debian packages the host has;
# - everything readable and executable by all (chmod a+rX): the throwaway test
#   users run jupyterhub-singleuser and its kernels from it.
set -eu

IDLE_CULLER_VERSION=${IDLE_CULLER_VERSION:-2.0.0}
JUPYTERHUB_VERSION=${JUPYTERHUB_VERSION:-6.1.1}
JUPYTERLAB_VERSION=${JUPYTERLAB_VERSION:-4.6.6}
# 0.9.x: the series for JupyterLab 4 and jupyter_server 2 (it asks jupyterlab>=4.2,<5).
NBGRADER_VERSION=${NBGRADER_VERSION:-0.9.5}
CACHE=${APPLIANCE_TEST_CACHE:-/var/cache/notebook-appliance-tests}
# The script's own hash: a change to what it does is a new directory.
SELF=$(sha256sum "$0" | cut -c1-8)
KEY="idle-culler-$IDLE_CULLER_VERSION-jupyterhub-$JUPYTERHUB_VERSION-lab-$JUPYTERLAB_VERSION"
KEY="$KEY-nbgrader-$NBGRADER_VERSION"
DIR="$CACHE/pypi-tools-$KEY-$SELF"
log() { echo "pypi-tools: $*" >&2; }

LOCK=.pypi-tools.lock
. "$(dirname "$0")/venv-cache.sh"
venv_cache_begin
# Built in place: console scripts and pyvenv.cfg name the directory they were made in.
# Only PATH and HOME from the environment: no PYTHONPATH or pyenv shims leak into the
# build; the host's pip configuration (/etc/pip.conf: its index and CA bundle) applies.
venv() {  # venv NAME REQUIREMENT...
    name=$1; shift
    log "venv $name with $* in $DIR"
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="${HOME:-/root}" \
        "$PYTHON" -m venv "$DIR/$name"
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="${HOME:-/root}" \
        "$DIR/$name/bin/python" -m pip install -q --disable-pip-version-check "$@" >&2
    "$DIR/$name/bin/python" -m pip freeze --all --local > "$DIR/$name-pip-freeze.txt"
}
venv venv "jupyterhub-idle-culler==$IDLE_CULLER_VERSION"
venv singleuser "jupyterhub==$JUPYTERHUB_VERSION" "jupyterlab==$JUPYTERLAB_VERSION"
# JupyterHub alone (HubOAuth for whoami-oauth), small enough to copy into the VM tier's guest.
venv hub "jupyterhub==$JUPYTERHUB_VERSION"
# ipykernel: nbgrader's autograde runs the students' notebooks with the python3 kernel.
venv nbgrader "jupyterhub==$JUPYTERHUB_VERSION" "jupyterlab==$JUPYTERLAB_VERSION" \
    "nbgrader==$NBGRADER_VERSION" ipykernel
chmod -R a+rX "$DIR"
touch "$DIR/.complete"
echo "$DIR"
