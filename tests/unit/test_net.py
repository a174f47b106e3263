"""Where students reach the hub: the machine's addresses (real netlink) and the URLs made of
them for the sockets the hub listens on."""

import ipaddress
import socket

from appliance import net

V4, V6 = ipaddress.ip_address("192.0.2.10"), ipaddress.ip_address("2001:db8::10")


def test_a_wildcard_socket_is_reached_on_every_address():
    assert net.urls([V4, V6], [("::", 8000, 0, 0)], tls=False) == [
        "http://192.0.2.10:8000/", "http://[2001:db8::10]:8000/"]


def test_an_ipv4_wildcard_leaves_ipv6_out_and_tls_says_https():
    assert net.urls([V4, V6], [("0.0.0.0", 443)], tls=True) == ["https://192.0.2.10:443/"]


def test_a_socket_bound_to_one_address_gives_that_one_only():
    assert net.urls([V4, V6], [("127.0.0.1", 8000)], tls=False) == ["http://127.0.0.1:8000/"]


def test_two_sockets_on_one_port_give_each_url_once():
    assert net.urls([V4], [("::", 8000, 0, 0), ("0.0.0.0", 8000)], tls=False) == [
        "http://192.0.2.10:8000/"]


def test_the_machines_addresses_come_from_netlink():
    """Real netlink: never loopback or link-local, each a global address."""
    found = net.addresses()
    assert all(not a.is_loopback and not a.is_link_local for a in found), found
    assert found == sorted(found, key=lambda a: (a.version, a))


def test_listening_skips_unix_sockets(tmp_path):
    tcp = socket.create_server(("127.0.0.1", 0))
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(tmp_path / "s"))
    try:
        assert net.listening([tcp, unix]) == [tcp.getsockname()]
    finally:
        tcp.close()
        unix.close()
