# The test command is `make test` (tests/run); `make deps` installs what the
# host needs for it (as root, on Debian 12).

# Pinned so the lint gives the same answer on every machine and in CI.
RUFF_VERSION = 0.17.6

.PHONY: test deps

test:
	tests/run

deps:
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap systemd-container procps
	python3 -m pip install -q 'ruff==$(RUFF_VERSION)'
	# pyenv only puts a new console script on PATH after a rehash.
	if command -v pyenv >/dev/null; then pyenv rehash; fi
