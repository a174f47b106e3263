"""Top-level test setup: skip the tiers this machine cannot run, and say why.

Tests that need a booted systemd are marked ``@pytest.mark.systemd`` (or use the
``requires_booted_systemd`` fixture); tests that create OS users are marked
``@pytest.mark.pam``. ``tests/run`` runs everything inside a booted container;
plain ``pytest`` on a host without systemd as PID 1 skips those tests.
"""

import functools
import os

import pytest


@functools.cache
def booted_systemd_missing() -> str | None:
    """Return why there is no booted systemd here, or None when there is one."""
    if not os.path.isdir("/run/systemd/system"):
        return "no booted systemd (/run/systemd/system is missing); run tests/run"
    try:
        with open("/proc/1/comm") as f:
            init = f.read().strip()
    except OSError as e:
        return f"cannot tell what PID 1 is ({e}); run tests/run"
    if init != "systemd":
        return f"PID 1 is {init!r}, not systemd; run tests/run"
    return None


def root_missing() -> str | None:
    """Return why throwaway OS users cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root to create throwaway OS users; run tests/run"
    return None


def pytest_configure(config):
    """Always list skip reasons in the summary (as -rs would)."""
    if "s" not in config.option.reportchars and "a" not in config.option.reportchars:
        config.option.reportchars += "s"


def pytest_report_header(config):
    """Say in the header whether the systemd tier runs, and why not."""
    why = booted_systemd_missing()
    if why is None:
        flag = os.environ.get("APPLIANCE_BOOTED_SYSTEMD", "unset")
        return f"booted systemd: yes (APPLIANCE_BOOTED_SYSTEMD={flag})"
    return f"booted systemd: no, tests marked 'systemd' are skipped: {why}"


def pytest_runtest_setup(item):
    """Skip marked tests whose environment is missing, with the reason."""
    if item.get_closest_marker("systemd") and (why := booted_systemd_missing()):
        pytest.skip(why)
    if item.get_closest_marker("pam") and (why := root_missing()):
        pytest.skip(why)


@pytest.fixture
def requires_booted_systemd():
    """Skip the requesting test unless systemd is PID 1 with its system bus."""
    if why := booted_systemd_missing():
        pytest.skip(why)
