"""Who is on the other end of a request: its TCP peer, or the client a trusted proxy names.

X-Forwarded-For is believed only from peers in hub.trusted_proxies, read from the right
(each proxy appends the address it saw), stopping at the first hop that is not trusted:
anything left of it was written by the client and proves nothing.
"""

import ipaddress
from collections.abc import Iterable

from aiohttp import web

from appliance.config import IPNetwork

UNKNOWN = "unknown"


def normalize(address: str | None) -> str | None:
    """An address in canonical form (IPv4-mapped IPv6 as IPv4), or None if not an address."""
    try:
        ip = ipaddress.ip_address((address or "").strip())
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def trusted(address: str, proxies: Iterable[IPNetwork]) -> bool:
    """Whether address is one of the trusted proxies."""
    ip = ipaddress.ip_address(address)
    return any(ip.version == net.version and ip in net for net in proxies)


def client_address(request: web.Request, proxies: tuple[IPNetwork, ...]) -> str:
    """The client's address: the peer, or through trusted proxies the hop before them."""
    hop = normalize(request.remote)
    if hop is None:
        return UNKNOWN
    forwarded = ",".join(request.headers.getall("X-Forwarded-For", ()))
    hops = [h for h in forwarded.split(",") if h.strip()]
    while hops and trusted(hop, proxies):
        named = normalize(hops.pop())
        if named is None:
            break  # garbage from a trusted proxy's client: the proxy is all we know
        hop = named
    return hop


def is_loopback(address: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and ::ffff:127.x; False for anything else or nothing."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback
