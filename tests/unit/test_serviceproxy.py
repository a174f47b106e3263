"""The relay to a service over a loopback port (real aiohttp servers on both sides): the
client's own Authorization goes through, the hub's cookies do not; and /services/ paths."""

import pytest
from aiohttp import web

from appliance import errors
from appliance.config import defaults
from appliance.identity import HUB_COOKIES
from appliance.proxy import normalise_service_path, relay
from appliance.services import listening_uids, service_upstream
from tests.ports import free_port


async def _echo(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Upgrade", "").lower() == "websocket":
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str(f"{msg.data} via {request.headers.get('Authorization')}")
        return ws
    return web.json_response({"path": request.path, "query": request.query_string,
                              "authorization": request.headers.get("Authorization"),
                              "cookie": request.headers.get("Cookie")})


@pytest.fixture
async def service(aiohttp_server):
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _echo)
    return await aiohttp_server(app)


@pytest.fixture
async def front(aiohttp_client, service):
    upstream = service_upstream("stats", f"http://localhost:{service.port}", defaults().proxy)

    async def handler(request: web.Request) -> web.StreamResponse:
        _, path = normalise_service_path(request.raw_path.partition("?")[0])
        return await relay(request, upstream, path, hub_cookies=HUB_COOKIES,
                           websockets=request.app["websockets"], prefix="/services/stats/")

    app = web.Application()
    app["websockets"] = set()
    app.router.add_route("*", "/services/{tail:.*}", handler)

    async def close(app):
        await upstream.close()
    app.on_cleanup.append(close)
    return await aiohttp_client(app)


async def test_the_clients_authorization_reaches_the_service_the_hubs_cookies_do_not(front):
    r = await front.get("/services/stats/api/x?a=1", headers={
        "Authorization": "token users-own", "Cookie": "appliance-session=s; theirs=1"})
    assert r.status == 200
    assert await r.json() == {"path": "/services/stats/api/x", "query": "a=1",
                              "authorization": "token users-own", "cookie": "theirs=1"}
    r = await front.get("/services/stats/")
    assert (await r.json())["authorization"] is None  # none made up


async def test_a_websocket_to_the_service_is_relayed_with_the_clients_token(front):
    async with front.ws_connect("/services/stats/ws",
                                headers={"Authorization": "token users-own"}) as ws:
        await ws.send_str("hello")
        assert (await ws.receive(timeout=10)).data == "hello via token users-own"


async def test_a_service_that_does_not_answer_is_an_upstream_error_naming_it(aiohttp_client):
    upstream = service_upstream("gone", f"http://127.0.0.1:{free_port()}", defaults().proxy)

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            return await relay(request, upstream, "/services/gone/", hub_cookies=HUB_COOKIES)
        except errors.UpstreamError as e:
            return web.Response(status=e.status, text=f"{e}|{e.user_message}")

    app = web.Application()
    app.router.add_get("/services/gone/", handler)
    try:
        r = await (await aiohttp_client(app)).get("/services/gone/")
        text = await r.text()
        assert r.status == errors.UpstreamError.status, text
        assert "service gone at 127.0.0.1:" in text
        assert text.endswith("The service gone is not answering. Try again in a moment.")
    finally:
        await upstream.close()


@pytest.mark.parametrize("raw, expected", [
    ("/services/stats/", ("stats", "/services/stats/")),
    ("/services/stats", ("stats", "/services/stats/")),
    ("/services/stats//a/./b/../c", ("stats", "/services/stats/a/c")),
    ("/services/st%61ts/x", ("stats", "/services/stats/x")),
])
def test_service_paths_are_normalised(raw, expected):
    assert normalise_service_path(raw) == expected


@pytest.mark.parametrize("raw", ["/services/stats/../other/", "/services/../user/alice/",
                                 "/user/alice/", "/services/a%2Fb/"])
def test_service_paths_that_climb_or_smuggle_are_refused(raw):
    with pytest.raises(errors.BadRequest):
        normalise_service_path(raw)


def test_the_uids_listening_on_a_port_from_proc_net_tcp():
    table = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode\n"
        "   0: 0100007F:2775 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001 "
        "       0 4242 1 0 100 0 0 10 0\n"
        "   1: 00000000:2775 00000000:0000 0A 00000000:00000000 00:00000000 00000000 61184 "
        "       0 4243 1 0 100 0 0 10 0\n"
        "   2: 0100007F:2775 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1002 "
        "       0 4244 1 0 100 0 0 10 0\n"
        "   3: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0 "
        "       0 4245 1 0 100 0 0 10 0\n")
    # Port 0x2775 = 10101: the two listeners, not the established connection (01).
    assert listening_uids(table, 10101) == {1001, 61184}
    assert listening_uids(table, 8000) == {0}
    assert listening_uids(table, 9) == set()
