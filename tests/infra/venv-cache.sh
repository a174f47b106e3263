# Sourced by the scripts that build cached venvs of third-party tools for the tests
# (tests/infra/pypi-tools.sh, tests/bench/jupyterhub-tools.sh). Before sourcing, set
# CACHE, DIR (the directory to build), LOCK (a file name under CACHE) and log().
# venv_cache_begin: print DIR and exit when it is complete already; otherwise check
# the interpreter, take the lock (one builder at a time, flock(1)), look again (another
# builder may have finished meanwhile) and leave an empty place for DIR.
PYTHON=/usr/bin/python3

venv_cache_begin() {
    if [ -f "$DIR/.complete" ]; then
        echo "$DIR"
        exit 0
    fi
    # The venvs' python is a symlink to the host's, the same path in the container.
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
        log "$PYTHON is not Python 3.11 (Debian 12's, as in the container)"; exit 2; }
    "$PYTHON" -c 'import ensurepip' 2>/dev/null || {
        log "$PYTHON has no venv module: apt-get install python3-venv (or make deps)"; exit 2; }
    mkdir -p "$CACHE"
    exec 9>"$CACHE/$LOCK"
    flock 9
    if [ -f "$DIR/.complete" ]; then
        echo "$DIR"
        exit 0
    fi
    rm -rf "$DIR"
}
