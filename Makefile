# The test command is `make test` (tests/run); `make deps` installs what the
# host needs for it (as root, on Debian 12).

# Pinned so the lint gives the same answer on every machine and in CI.
RUFF_VERSION = 0.17.6

.PHONY: test deps bench test-vm demo

test:
	tests/run

# Only the VM tier: the installed .deb on a booted qemu VM (tests/system/).
test-vm:
	tests/run tests/system

# Try it: build the .deb, boot a VM with it installed and demo users, print the
# URL and the logins; Ctrl-C stops the VM.
demo: deb
	/usr/bin/python3 -m tests.vm.demo

# Figures, not a test: the hub vs direct to a real notebook server, spawn overhead and a
# classroom burst, in the booted container (BENCH_ARGS="--quick --burst 5" for a short run).
bench:
	tests/infra/nspawn.sh "$$(tests/infra/rootfs.sh)" . \
	    env PYTHONPATH=/src python3 /src/tests/bench/bench_hub.py $(BENCH_ARGS)

deps:
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap systemd-container procps
	# The VM tier (tests/system/, make demo) runs on the host: qemu, ssh, Debian's pytest/aiohttp.
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-system-x86 qemu-utils \
	    openssh-client python3-pytest python3-pytest-aiohttp python3-aiohttp
	# Only to validate vagrant/Vagrantfile: not its recommended libvirt stack.
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends vagrant
	python3 -m pip install -q 'ruff==$(RUFF_VERSION)'
	# pyenv only puts a new console script on PATH after a rehash.
	if command -v pyenv >/dev/null; then pyenv rehash; fi
