"""The machine's addresses, read over netlink (pyroute2: its only importer): where students can
reach the hub, told at start-up and on the admin page, so nobody has to run `ip addr`."""

import ipaddress
import socket

from pyroute2 import IPRoute

#: RT_SCOPE_UNIVERSE: an address reachable from other machines (rtnetlink(7)).
GLOBAL_SCOPE = 0
#: IFF_UP and IFF_LOOPBACK (netdevice(7)).
IFF_UP, IFF_LOOPBACK = 0x1, 0x8

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def addresses() -> list[Address]:
    """The global addresses of interfaces that are up, IPv4 first (blocking: netlink dump)."""
    with IPRoute() as ip:
        up = {link["index"] for link in ip.get_links()
              if link["flags"] & IFF_UP and not link["flags"] & IFF_LOOPBACK}
        found = {ipaddress.ip_address(msg.get_attr("IFA_ADDRESS"))
                 for msg in ip.get_addr()
                 if msg["index"] in up and msg["scope"] == GLOBAL_SCOPE}
    return sorted(found, key=lambda a: (a.version, a))


def urls(found: list[Address], listening: list[tuple], tls: bool) -> list[str]:
    """The hub's URLs on those addresses, for the sockets it listens on (getsockname()
    tuples); a socket bound to one address gives that address only."""
    scheme = "https" if tls else "http"
    result: list[str] = []
    for bound in listening:
        host, port = bound[0], bound[1]
        wildcard = ipaddress.ip_address(host).is_unspecified
        v4_only = wildcard and ipaddress.ip_address(host).version == 4
        for address in (found if wildcard else [ipaddress.ip_address(host)]):
            if v4_only and address.version == 6:
                continue
            shown = f"[{address}]" if address.version == 6 else str(address)
            url = f"{scheme}://{shown}:{port}/"
            if url not in result:
                result.append(url)
    return result


def listening(sockets: list[socket.socket]) -> list[tuple]:
    """getsockname() of each TCP listener (unix sockets left out)."""
    return [s.getsockname() for s in sockets if s.family in (socket.AF_INET, socket.AF_INET6)]
