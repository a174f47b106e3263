# The test command is `make test` (tests/run); `make deps` installs what the
# host needs for it (as root, on Debian 12).

# Pinned so the lint gives the same answer on every machine and in CI.
RUFF_VERSION = 0.17.6

.PHONY: test deps bench classroom login-flood admin-bench test-vm demo deb

VERSION := $(shell dpkg-parsechangelog -S Version 2>/dev/null)
DEB = build/notebook-appliance_$(VERSION)_all.deb

test:
	tests/run

# Only the VM tier: the installed .deb on a booted qemu VM (tests/system/).
test-vm:
	tests/run tests/system

# build/notebook-appliance_<version>_all.deb, built from a copy of the tree in
# build/src (dpkg-buildpackage writes its results next to the source), then
# checked with lintian: an error fails the build; warnings are fixed or
# overridden with a reason in debian/notebook-appliance.lintian-overrides.
deb:
	rm -rf build/src && mkdir -p build/src
	tar -c --exclude=./build --exclude=./.git --exclude='__pycache__' \
	    --exclude=./.pytest_cache --exclude=./.ruff_cache . | tar -x -C build/src
	# Debian's python3 only: a pyenv or venv interpreter first on PATH would build
	# against its own site-packages, not the packages the .deb depends on.
	cd build/src && PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b
	lintian --fail-on error,warning --info $(DEB)

# Try it: build the .deb, boot a VM with it installed and demo users, print the
# URL and the logins; Ctrl-C stops the VM.
demo: deb
	/usr/bin/python3 -m tests.vm.demo

# Figures, not a test: the hub vs direct to a real notebook server, spawn overhead and a
# classroom burst, in the booted container (BENCH_ARGS="--quick --burst 5" for a short run).
bench:
	tests/infra/nspawn.sh "$$(tests/infra/rootfs.sh)" . \
	    env PYTHONPATH=/src python3 /src/tests/bench/bench_hub.py $(BENCH_ARGS)

# Figures: a logged-in user's latency before and during 400 concurrent bad logins from one
# address, and how many of 50 wrong passwords for one user reach PAM, in the booted container
# (LOGIN_FLOOD_ARGS="--flood 40 --wrong 20" for a short run).
login-flood:
	tests/infra/nspawn.sh "$$(tests/infra/rootfs.sh)" . \
	    env PYTHONPATH=/src python3 /src/tests/bench/login_flood.py $(LOGIN_FLOOD_ARGS)

# Figures: the admin page with ADMIN_ARGS="--servers 150" servers running: render time, the
# live stream's hub CPU per second, the hub's RSS, in the booted container.
admin-bench:
	tests/infra/nspawn.sh "$$(tests/infra/rootfs.sh)" . \
	    env PYTHONPATH=/src python3 /src/tests/bench/admin_console.py $(ADMIN_ARGS)

# Figures: N new users log in through the form and start at the same moment, each runs a
# cell; a probe times the hub meanwhile (CLASSROOM_ARGS="--sizes 50" for a short run). The
# same classroom runs against JupyterHub + configurable-http-proxy + systemdspawner, built
# once (cached) by tests/bench/jupyterhub-tools.sh and bound read-only into the container
# (CLASSROOM_ARGS="--hubs appliance" for ours alone).
classroom:
	tools=$$(tests/bench/jupyterhub-tools.sh) && rootfs=$$(tests/infra/rootfs.sh) && \
	APPLIANCE_BENCH_TOOLS="$$tools" tests/infra/nspawn.sh "$$rootfs" . \
	    env PYTHONPATH=/src python3 /src/tests/bench/classroom.py $(CLASSROOM_ARGS)

deps:
	apt-get update -q
	# Building the .deb (make deb): debhelper with pybuild, and lintian.
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	    debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools \
	    dpkg-dev lintian
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap systemd-container procps
	# The VM tier (tests/system/, make demo) runs on the host: qemu, ssh, Debian's pytest/aiohttp.
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-system-x86 qemu-utils \
	    openssh-client python3-pytest python3-pytest-aiohttp python3-aiohttp
	# Only to validate vagrant/Vagrantfile: not its recommended libvirt stack.
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends vagrant
	# The real JupyterHub that tests/run compares our REST API with and make classroom's
	# JupyterHub side (tests/bench/jupyterhub-tools.sh), and the tests' PyPI tools
	# (tests/infra/pypi-tools.sh): venvs made with Debian's python3, and npm for
	# configurable-http-proxy (any npm on PATH will do).
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
	command -v npm >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q npm
	python3 -m pip install -q 'ruff==$(RUFF_VERSION)'
	# pyenv only puts a new console script on PATH after a rehash.
	if command -v pyenv >/dev/null; then pyenv rehash; fi
