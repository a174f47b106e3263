"""X-Forwarded-Proto is trusted from a loopback peer (the local nginx) and nobody else."""

import pytest
from aiohttp import web

from appliance.app import forwarded_proto_middleware
from appliance.clientaddr import is_loopback
from appliance.identity import set_cookie


@web.middleware
async def peer_from_test_header(request, handler):
    """Fault injection: pretend the TCP peer is X-Test-Peer (the test client is on loopback)."""
    peer = request.headers.get("X-Test-Peer")
    return await handler(request.clone(remote=peer) if peer else request)


async def cookie_page(request: web.Request) -> web.Response:
    response = web.Response(text=request.scheme)
    set_cookie(response, request, "appliance-session", "x")
    return response


@pytest.fixture
async def client(aiohttp_client):
    app = web.Application(middlewares=[peer_from_test_header, forwarded_proto_middleware])
    app.router.add_get("/", cookie_page)
    return await aiohttp_client(app)


@pytest.mark.parametrize("headers, scheme", [
    ({}, "http"),
    ({"X-Forwarded-Proto": "https"}, "https"),
    ({"X-Forwarded-Proto": "https", "X-Test-Peer": "::1"}, "https"),
    ({"X-Forwarded-Proto": "https", "X-Test-Peer": "::ffff:127.0.0.1"}, "https"),
    ({"X-Forwarded-Proto": "https", "X-Test-Peer": "192.0.2.7"}, "http"),
    ({"X-Forwarded-Proto": "https", "X-Test-Peer": "2001:db8::7"}, "http"),
    ({"X-Forwarded-Proto": "http"}, "http"),
])
async def test_scheme_and_secure_cookie_follow_a_loopback_proxy_only(client, headers, scheme):
    r = await client.get("/", headers=headers)
    assert await r.text() == scheme
    assert ("Secure" in r.headers["Set-Cookie"]) == (scheme == "https")
    # Under TLS the name carries __Host-: no other port or subdomain can set or shadow it.
    assert r.headers["Set-Cookie"].startswith("__Host-appliance-session=") == (scheme == "https")


@pytest.mark.parametrize("address, expected", [
    ("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("10.0.0.1", False), ("::ffff:10.0.0.1", False), ("", False), (None, False),
    ("not an address", False),
])
def test_is_loopback(address, expected):
    assert is_loopback(address) is expected
