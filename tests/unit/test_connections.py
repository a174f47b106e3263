"""Whose connection it is: the address the per-address cap counts under."""

import pytest

from appliance.connections import address_key


@pytest.mark.parametrize("host, key", [
    ("192.0.2.7", "192.0.2.7"),
    ("::ffff:192.0.2.7", "192.0.2.7"),  # IPv4 on a dual-stack socket ("::")
    ("127.0.0.1", "loopback"),
    ("127.45.0.9", "loopback"),  # a local user can send from any of 127.0.0.0/8
    ("::1", "loopback"),
    ("::ffff:127.0.0.2", "loopback"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),  # one host's /64 is one address
    ("fe80::1%eth0", "fe80::/64"),
    ("", ""),
])
def test_address_key(host, key):
    assert address_key(host) == key
