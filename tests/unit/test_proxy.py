"""Proxy tests with real aiohttp servers on both sides: a front on 127.0.0.1, a notebook
stand-in on a UNIX socket."""

import asyncio
import gzip
import os
import random
import socket
import tempfile

import psutil
import pytest
from aiohttp import ClientSession, WSMsgType, web
from yarl import URL

from appliance import errors
from appliance.config import ProxyConfig
from appliance.proxy import (
    HOP_BY_HOP,
    _normalise_general,
    close_all,
    normalise_user_path,
    relay,
)
from appliance.upstream import Upstream

HUB_COOKIES = frozenset({"appliance-session"})
TOKEN = "upstream-secret-token"
MIB = 1024 * 1024
CHUNK = b"x" * (64 * 1024)
GZIPPED = gzip.compress(b"hello notebook " * 10000)
BIG = 200 * MIB
RSS_LIMIT = 50 * MIB
WS_PROTOCOL = "v1.kernel.websocket.jupyter.org"


# --- the notebook server stand-in --------------------------------------------------------

async def echo(request: web.Request) -> web.Response:
    """Report what arrived, headers as a list so duplicates show."""
    return web.json_response({
        "method": request.method, "raw_path": request.raw_path,
        "headers": [[k, v] for k, v in request.headers.items()],
    })


async def count(request: web.Request) -> web.Response:
    """Count the streamed request body without keeping it."""
    total = 0
    async for chunk in request.content.iter_any():
        total += len(chunk)
    return web.json_response({"bytes": total, "chunked": "Transfer-Encoding" in request.headers})


async def download(request: web.Request) -> web.StreamResponse:
    """Stream `size` bytes with a Content-Length."""
    size = int(request.query["size"])
    response = web.StreamResponse(headers={"Content-Length": str(size)})
    await response.prepare(request)
    for _ in range(size // len(CHUNK)):
        await response.write(CHUNK)
    await response.write_eof()
    return response


async def origin_wide(request: web.Request) -> web.Response:
    """Headers a student's server could send to act on the whole hub origin."""
    response = web.Response(text="origin-wide")
    for value in ("mine=1; Path=/user/alice/x", "dir=1; Path=/user/alice", "top=1; Path=/",
                  "other=1; Path=/user/alice2/", "wide=1; Domain=127.0.0.1; Path=/user/alice/",
                  "plain=1"):
        response.headers.add("Set-Cookie", value)
    response.headers["Service-Worker-Allowed"] = "/"
    response.headers["Clear-Site-Data"] = '"*"'
    cors = request.query.get("cors", "http://127.0.0.1:9999")
    response.headers["Access-Control-Allow-Origin"] = cors
    response.headers["Access-Control-Allow-Credentials"] = "true"
    return response


async def gzipped(request: web.Request) -> web.Response:
    """Serve a body that is already gzip-encoded."""
    return web.Response(body=GZIPPED, headers={"Content-Encoding": "gzip",
                                               "Content-Type": "text/plain"})


async def cookies(request: web.Request) -> web.Response:
    """Try to set the hub's cookie next to legitimate ones."""
    response = web.Response(text="cookies")
    for value in ("appliance-session=evil; Path=/", "_xsrf=abc; Path=/user/alice/",
                  "other=1", "=appliance-session=evil", "appliance-session=x; Path=/user/"):
        response.headers.add("Set-Cookie", value)
    response.headers["Keep-Alive"] = "timeout=5"
    response.headers["X-Custom"] = "kept"
    return response


async def empty(request: web.Request) -> web.Response:
    """Answer 204 or 304 as asked."""
    return web.Response(status=int(request.query["status"]), headers={"ETag": '"e"'})


async def broken(request: web.Request) -> web.StreamResponse:
    """Promise 1 MiB, send 128 KiB, hang up."""
    response = web.StreamResponse(headers={"Content-Length": str(MIB)})
    await response.prepare(request)
    await response.write(CHUNK)
    await response.write(CHUNK)
    request.transport.close()
    return response


async def ws_echo(request: web.Request) -> web.WebSocketResponse:
    """Echo frames; 'close:<code>' closes with that code; record how the peer closed."""
    ws = web.WebSocketResponse(protocols=(WS_PROTOCOL,))
    await ws.prepare(request)
    request.app["seen"]["ws_headers"] = dict(request.headers)
    async for msg in ws:
        if msg.type is WSMsgType.TEXT and msg.data == "close:none":
            # A close frame with no status code (RFC 6455 §5.5.1), as Jupyter's server sends
            # when a kernel's websocket ends: aiohttp reads its code as 0.
            request.transport.write(b"\x88\x00")
        elif msg.type is WSMsgType.TEXT and msg.data.startswith("close:"):
            await ws.close(code=int(msg.data[6:]))
        elif msg.type is WSMsgType.TEXT and msg.data.startswith("big:"):
            await ws.send_bytes(b"x" * int(msg.data[4:]))
        elif msg.type is WSMsgType.TEXT:
            await ws.send_str("echo:" + msg.data)
        elif msg.type is WSMsgType.BINARY:
            await ws.send_bytes(msg.data[::-1])
    if not request.app["ws_closed"].done():
        request.app["ws_closed"].set_result(ws.close_code)
    return ws


async def ws_refuse(request: web.Request) -> web.Response:
    """Refuse a websocket the way Jupyter refuses a bad Origin."""
    raise web.HTTPForbidden(text="cross-origin websocket refused")


def notebook_app() -> web.Application:
    """The upstream stand-in."""
    app = web.Application()
    app["seen"] = {}
    app["ws_closed"] = asyncio.get_running_loop().create_future()
    for name, handler in (("echo", echo), ("count", count), ("download", download),
                          ("gzip", gzipped), ("cookies", cookies),
                          ("origin-wide", origin_wide), ("empty", empty),
                          ("broken", broken), ("ws", ws_echo), ("ws-refuse", ws_refuse)):
        app.router.add_route("*", "/user/alice/" + name, handler)
    app.router.add_route("*", "/user/alice/files/{tail:.*}", echo)
    return app


# --- fixtures ---------------------------------------------------------------------------

@pytest.fixture(autouse=True)
async def asyncio_debug():
    """STYLE.md habit 1: report slow callbacks."""
    asyncio.get_running_loop().set_debug(True)
    yield


@pytest.fixture
def sock_dir():
    """A short private directory: AF_UNIX paths are limited to 108 bytes."""
    with tempfile.TemporaryDirectory(prefix="proxy-") as path:
        yield path


@pytest.fixture
async def notebook(sock_dir):
    """A running upstream app on a real UNIX socket."""
    app = notebook_app()
    path = app["socket"] = os.path.join(sock_dir, "nb.sock")
    runner = web.AppRunner(app)
    await runner.setup()
    await web.UnixSite(runner, path).start()
    yield app
    await runner.cleanup()


async def _front_handler(request: web.Request) -> web.StreamResponse:
    """What the hub does: normalise, then relay; typed errors become their status."""
    try:
        _, path = normalise_user_path(request.raw_path.partition("?")[0])
        return await relay(request, request.app["upstream"], path, hub_cookies=HUB_COOKIES,
                           websockets=request.app["websockets"], prefix="/user/alice/")
    except errors.ApplianceError as err:
        return web.Response(status=err.status, text=type(err).__name__)


async def _front(aiohttp_client, socket_path: str, proxy: ProxyConfig | None = None):
    """A test client talking to a front app that relays to socket_path."""
    app = web.Application()
    upstream = Upstream(socket_path, TOKEN, proxy)
    app["upstream"] = upstream
    app["websockets"] = set()

    async def close_upstream(app):
        await upstream.close()
    app.on_cleanup.append(close_upstream)
    app.router.add_route("*", "/user/{tail:.*}", _front_handler)
    return await aiohttp_client(app)


@pytest.fixture
async def client(aiohttp_client, notebook):
    """Test client → front (127.0.0.1) → notebook (UNIX socket)."""
    return await _front(aiohttp_client, notebook["socket"])


class PeakRSS:
    """Sample this process's RSS every 20 ms; report the peak growth."""

    def __init__(self):
        self.proc = psutil.Process()
        self.base = self.peak = self.proc.memory_info().rss

    async def __aenter__(self):
        self.task = asyncio.create_task(self._sample())
        return self

    async def _sample(self):
        while True:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            await asyncio.sleep(0.02)

    async def __aexit__(self, *exc):
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.base


async def _generate(total: int):
    """An upload body produced on the fly."""
    for _ in range(total // len(CHUNK)):
        yield CHUNK


# --- normalise_user_path ----------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("/user/alice/tree", ("alice", "/user/alice/tree")),
    ("/user/alice/tree/", ("alice", "/user/alice/tree/")),
    ("/user/alice", ("alice", "/user/alice/")),
    ("/user/alice/", ("alice", "/user/alice/")),
    ("//user//alice//tree", ("alice", "/user/alice/tree")),
    ("/user/alice/a/./b/../c", ("alice", "/user/alice/a/c")),
    ("/user/alice/a/b/..", ("alice", "/user/alice/a/")),
    ("/user/alice/a/.", ("alice", "/user/alice/a/")),
    ("/user/Alice/", ("Alice", "/user/Alice/")),
    ("/user/alice./", ("alice.", "/user/alice./")),
    ("/user/alice/files/caf%C3%A9.txt", ("alice", "/user/alice/files/caf%C3%A9.txt")),
    ("/user/alice/files/caf\u00e9.txt", ("alice", "/user/alice/files/caf%C3%A9.txt")),
    ("/user/alice/a%20b/c:d@e+f", ("alice", "/user/alice/a%20b/c:d@e+f")),
    ("/user/alice/q%3Fx%23y%25z", ("alice", "/user/alice/q%3Fx%23y%25z")),
    ("/user/al%69ce/", ("alice", "/user/alice/")),
    ("/user/", ("", "/user/")),
    ("/user", ("", "/user/")),
])
def test_normalise_ok(raw, expected):
    assert normalise_user_path(raw) == expected


@pytest.mark.parametrize("raw", [
    "/user/bob/../alice/",
    "/user/alice/..",
    "/user/alice/../alice/tree",
    "/user/alice/%2F..%2Fbob",
    "/user/alice/%2e%2e/bob/",
    "/user/alice/%2E%2E/%2E%2E/bob/",
    "/user/alice/x%00",
    "/user/alice/a%5C..%5Cb",
    "/user/../hub/admin",
    "/x/../user/alice/",
    "/hub/login",
    "/users/alice/",
    "/",
    "",
    "/user/alice/%FF",
])
def test_normalise_refuses(raw):
    with pytest.raises(errors.BadRequest):
        normalise_user_path(raw)


def test_fast_path_agrees_with_general_rules():
    """The shortcut for plain paths must give what the general rules give."""
    rng = random.Random(1234)
    pieces = ["user", "alice", "Bob", "a.b", "x.", ".", "..", "", "%2e", "%41", "caf\u00e9",
              "a b", "~x", "q=1", "%2F", "+", "@:", "-_"]
    for _ in range(5000):
        raw = "/" + "/".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
        if rng.random() < 0.5:
            raw = "/user/" + raw.lstrip("/")
        try:
            expected = _normalise_general(raw)
        except errors.BadRequest:
            expected = "BadRequest"
        try:
            got = normalise_user_path(raw)
        except errors.BadRequest:
            got = "BadRequest"
        assert got == expected, raw


def test_hop_by_hop_is_lowercase_and_complete():
    assert {"connection", "keep-alive", "te", "trailer", "transfer-encoding",
            "upgrade", "proxy-authorization", "proxy-authenticate"} <= HOP_BY_HOP
    assert all(name == name.lower() for name in HOP_BY_HOP)


# --- HTTP relay --------------------------------------------------------------------------

async def test_get_with_query_string(client):
    target = "/user/alice/echo?a=1&b=%20x%2Fy&a=2&c=%C3%A9"
    # encoded=True: send the query exactly as written, as a browser would.
    resp = await client.session.get(URL(f"http://127.0.0.1:{client.port}{target}", encoded=True))
    assert resp.status == 200
    assert (await resp.json())["raw_path"] == target


async def test_unicode_file_path_reaches_upstream(client):
    resp = await client.get("/user/alice/files/caf%C3%A9.txt")
    assert (await resp.json())["raw_path"] == "/user/alice/files/caf%C3%A9.txt"


async def test_request_headers_filtered(client):
    resp = await client.get("/user/alice/echo", headers={
        "Cookie": "appliance-session=s3cret; _xsrf=tok; other=o",
        "Authorization": "Bearer browser-token",
        "X-Forwarded-For": "203.0.113.7",
        "X-Real-IP": "198.51.100.1",
        "Connection": "keep-alive, X-Private",
        "X-Private": "dropped",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "Origin": "http://example.test",
    })
    body = await resp.json()
    headers = {k.lower(): v for k, v in body["headers"]}
    assert len(body["headers"]) == len(headers)  # nothing duplicated
    assert headers["cookie"] == "_xsrf=tok; other=o"
    assert headers["authorization"] == "token " + TOKEN
    assert headers["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert headers["x-real-ip"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == headers["host"] == f"127.0.0.1:{client.port}"
    assert headers["origin"] == "http://example.test"
    for name in ("x-private", "keep-alive", "te", "proxy-authorization"):
        assert name not in headers
    assert "user-agent" in headers  # the test client's own, passed through
    assert "accept-encoding" in headers


async def test_no_headers_added_by_proxy(client):
    resp = await client.get("/user/alice/echo", skip_auto_headers=("User-Agent", "Accept",
                                                                   "Accept-Encoding"))
    names = {k.lower() for k, _ in (await resp.json())["headers"]}
    assert names == {"host", "authorization", "x-forwarded-for", "x-real-ip",
                     "x-forwarded-proto", "x-forwarded-host"}


async def test_only_hub_cookie_sent_means_no_cookie_header(client):
    resp = await client.get("/user/alice/echo", headers={"Cookie": "appliance-session=s"})
    names = {k.lower() for k, _ in (await resp.json())["headers"]}
    assert "cookie" not in names


async def test_upstream_cannot_set_hub_cookie(client):
    resp = await client.get("/user/alice/cookies")
    assert resp.headers.getall("Set-Cookie") == ["_xsrf=abc; Path=/user/alice/", "other=1"]
    assert resp.headers["X-Custom"] == "kept"
    assert "Keep-Alive" not in resp.headers


async def test_upstream_cannot_act_on_the_whole_origin(client):
    resp = await client.get("/user/alice/origin-wide")
    assert resp.headers.getall("Set-Cookie") == [
        "mine=1; Path=/user/alice/x", "dir=1; Path=/user/alice", "plain=1"]
    assert "Service-Worker-Allowed" not in resp.headers
    assert "Clear-Site-Data" not in resp.headers
    # A CORS grant to another origin is dropped whole; one to the hub's own origin passes.
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert "Access-Control-Allow-Credentials" not in resp.headers
    own = f"http://{client.server.host}:{client.server.port}"
    resp = await client.get("/user/alice/origin-wide", params={"cors": own})
    assert resp.headers["Access-Control-Allow-Origin"] == own
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"


async def test_gzip_body_passes_through_untouched(client):
    async with ClientSession(auto_decompress=False) as session:
        resp = await session.get(client.make_url("/user/alice/gzip"),
                                 headers={"Accept-Encoding": "gzip"})
        assert resp.headers["Content-Encoding"] == "gzip"
        assert int(resp.headers["Content-Length"]) == len(GZIPPED)
        assert await resp.read() == GZIPPED


@pytest.mark.parametrize("status", [204, 304])
async def test_empty_body_statuses(client, status):
    resp = await client.get(f"/user/alice/empty?status={status}")
    assert resp.status == status
    assert resp.headers["ETag"] == '"e"'
    assert await resp.read() == b""
    again = await client.get("/user/alice/echo")  # connection still sane for keep-alive
    assert again.status == 200


async def test_head_keeps_upstream_length(client):
    resp = await client.head("/user/alice/gzip")
    assert resp.status == 200
    assert int(resp.headers["Content-Length"]) == len(GZIPPED)


async def test_small_post_body(client):
    resp = await client.post("/user/alice/count", data=b"a" * 1000)
    assert await resp.json() == {"bytes": 1000, "chunked": False}


@pytest.mark.parametrize("sized", [False, True], ids=["chunked", "content-length"])
async def test_large_upload_streams(client, sized):
    headers = {"Content-Length": str(BIG)} if sized else {}
    async with PeakRSS() as rss:
        resp = await client.post("/user/alice/count", data=_generate(BIG), headers=headers)
        body = await resp.json()
    assert body == {"bytes": BIG, "chunked": not sized}
    print(f"peak RSS growth {rss.growth / MIB:.1f} MiB")
    assert rss.growth < RSS_LIMIT, f"RSS grew {rss.growth / MIB:.1f} MiB"


async def test_large_download_streams(client):
    async with PeakRSS() as rss:
        resp = await client.get(f"/user/alice/download?size={BIG}")
        assert resp.headers["Content-Length"] == str(BIG)
        total = 0
        async for chunk in resp.content.iter_any():
            total += len(chunk)
    assert total == BIG
    print(f"peak RSS growth {rss.growth / MIB:.1f} MiB")
    assert rss.growth < RSS_LIMIT, f"RSS grew {rss.growth / MIB:.1f} MiB"


async def test_broken_upstream_body_breaks_client_transfer(client):
    resp = await client.get("/user/alice/broken")
    with pytest.raises(Exception) as caught:
        await resp.read()
    assert "ClientPayloadError" in type(caught.value).__name__


async def test_missing_socket_is_upstream_error(aiohttp_client, sock_dir):
    client = await _front(aiohttp_client, os.path.join(sock_dir, "absent.sock"))
    resp = await client.get("/user/alice/echo")
    assert (resp.status, await resp.text()) == (502, "UpstreamError")


async def test_refused_socket_is_upstream_error(aiohttp_client, sock_dir):
    path = os.path.join(sock_dir, "dead.sock")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(path)  # bound, never listening: connect() gets ECONNREFUSED
        client = await _front(aiohttp_client, path)
        resp = await client.get("/user/alice/echo")
        ws_resp = await client.get("/user/alice/ws", headers={
            "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert (resp.status, await resp.text()) == (502, "UpstreamError")
    assert (ws_resp.status, await ws_resp.text()) == (502, "UpstreamError")


async def test_upstream_close_is_safe(notebook):
    upstream = Upstream(notebook["socket"], TOKEN)
    await upstream.close()  # never used: nothing to close
    await upstream.close()


# --- websockets --------------------------------------------------------------------------

async def test_websocket_relays_both_ways(client, notebook):
    ws = await client.ws_connect("/user/alice/ws?session_id=1", protocols=(WS_PROTOCOL,),
                                 headers={"Cookie": "appliance-session=s; _xsrf=t"})
    assert ws.protocol == WS_PROTOCOL
    await ws.send_str("hi")
    assert await ws.receive_str() == "echo:hi"
    await ws.send_bytes(b"\x00\x01\x02")
    assert await ws.receive_bytes() == b"\x02\x01\x00"
    await ws.close(code=4321)
    assert await asyncio.wait_for(notebook["ws_closed"], 5) == 4321
    seen = notebook["seen"]["ws_headers"]
    assert seen["Authorization"] == "token " + TOKEN
    assert seen["Cookie"] == "_xsrf=t"
    assert seen["Host"] == f"127.0.0.1:{client.port}"


async def test_websocket_upstream_close_code_reaches_browser(client):
    ws = await client.ws_connect("/user/alice/ws", protocols=(WS_PROTOCOL,))
    await ws.send_str("close:4004")
    msg = await ws.receive()
    assert msg.type is WSMsgType.CLOSE
    assert ws.close_code == 4004


async def test_an_upstream_close_without_a_code_reaches_the_browser_as_1000(client):
    """aiohttp gives a close frame without a status code the code 0, which no peer may send
    (found by the classroom bench: the browser failed with 'Invalid close code: 0')."""
    ws = await client.ws_connect("/user/alice/ws", protocols=(WS_PROTOCOL,))
    await ws.send_str("close:none")
    msg = await ws.receive()
    assert msg.type is WSMsgType.CLOSE, msg
    assert ws.close_code == 1000


async def test_websocket_without_subprotocol(client):
    ws = await client.ws_connect("/user/alice/ws")
    assert ws.protocol is None
    await ws.send_str("x")
    assert await ws.receive_str() == "echo:x"
    await ws.close()


async def test_websocket_compression_not_passed_through(client, notebook):
    ws = await client.ws_connect("/user/alice/ws", protocols=(WS_PROTOCOL,), compress=15)
    assert ws.compress == 0  # each hop negotiates for itself; the hub offers none
    await ws.send_str("z" * 10000)
    assert await ws.receive_str() == "echo:" + "z" * 10000
    await ws.close()
    assert "Sec-WebSocket-Extensions" not in notebook["seen"]["ws_headers"]


async def test_websocket_refused_returns_upstream_status(client):
    resp = await client.get("/user/alice/ws-refuse", headers={
        "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert resp.status == 403


async def test_websocket_leaves_no_tasks(client, notebook):
    before = len(asyncio.all_tasks())
    for _ in range(5):
        ws = await client.ws_connect("/user/alice/ws", protocols=(WS_PROTOCOL,))
        await ws.send_str("x")
        await ws.receive_str()
        await ws.close()
    await asyncio.sleep(0.1)
    assert len(asyncio.all_tasks()) <= before


async def test_close_all_ends_open_websockets_going_away(client, notebook):
    """Hub shutdown closes relayed websockets with 1001 at once, and forgets them."""
    ws = await client.ws_connect("/user/alice/ws", protocols=(WS_PROTOCOL,))
    await ws.send_str("x")
    assert await ws.receive_str() == "echo:x"
    open_ws = client.server.app["websockets"]
    assert len(open_ws) == 1
    await asyncio.wait_for(close_all(open_ws), 5)
    msg = await asyncio.wait_for(ws.receive(), 5)
    assert msg.type is WSMsgType.CLOSE
    assert ws.close_code == 1001
    await ws.close()
    await asyncio.sleep(0.1)
    assert not open_ws


# --- websocket message size (proxy.max_message_size) --------------------------------------

LIMIT = 1000


@pytest.fixture
async def small(aiohttp_client, notebook):
    """A front whose websocket messages may be LIMIT bytes."""
    return await _front(aiohttp_client, notebook["socket"],
                        ProxyConfig(max_message_size=LIMIT, upstream_connections=4))


def masked_frame(payload: bytes, opcode: int = 0x2, fin: bool = True) -> bytes:
    """A client frame (RFC 6455 §5.2), masked with a random key as a browser sends it."""
    key = os.urandom(4)
    n = len(payload)
    head = bytes(((0x80 if fin else 0) | opcode,))
    head += bytes((0x80 | n,)) if n < 126 else bytes((0x80 | 126,)) + n.to_bytes(2, "big")
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def raw_ws(client) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A websocket to the echo server through the front, opened by hand."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(b"GET /user/alice/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 b"Sec-WebSocket-Version: 13\r\n\r\n")
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    return reader, writer


async def test_messages_up_to_the_limit_pass_even_split_byte_by_byte(small, notebook):
    reader, writer = await raw_ws(small)
    frames = (masked_frame(b"a" * LIMIT)
              + masked_frame(b"b" * 300, fin=False) + masked_frame(b"p", opcode=0x9)
              + masked_frame(b"c" * 700, opcode=0x0))
    for i in range(len(frames)):  # every header split across reads
        writer.write(frames[i:i + 1])
        await writer.drain()
    got = b""
    while got.count(b"\x82") < 2 or len(got) < 2 * (LIMIT + 4):
        got += await asyncio.wait_for(reader.read(65536), 5)
    assert got.count(b"a") == LIMIT and got.count(b"b") == 300 and got.count(b"c") == 700
    writer.close()


@pytest.mark.parametrize("frames", [
    [masked_frame(b"x" * (LIMIT + 1))],  # refused from its header, its payload passed over
    [masked_frame(b"y" * 600, fin=False), masked_frame(b"z" * 401, opcode=0x0)],
], ids=["one-frame", "fragmented"])
async def test_a_larger_message_from_the_browser_closes_both_sides_with_1009(small, notebook,
                                                                            frames):
    reader, writer = await raw_ws(small)
    writer.write(b"".join(frames))
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"\x88\x02\x03\xf1"  # 1009
    writer.write(masked_frame(b"\x03\xf1", opcode=0x8))  # the browser answers the Close
    assert await asyncio.wait_for(reader.read(), 5) == b""  # and the hub hangs up
    assert await asyncio.wait_for(notebook["ws_closed"], 5) == 1009
    writer.close()


async def test_a_larger_message_from_the_server_closes_both_sides_with_1009(small, notebook):
    ws = await small.ws_connect("/user/alice/ws", protocols=(WS_PROTOCOL,))
    await ws.send_str(f"big:{LIMIT}")
    assert len(await ws.receive_bytes()) == LIMIT
    await ws.send_str(f"big:{LIMIT + 1}")
    msg = await ws.receive()
    assert msg.type is WSMsgType.CLOSE and ws.close_code == 1009
    assert await asyncio.wait_for(notebook["ws_closed"], 5) == 1009
    await ws.close()


async def test_a_users_websockets_hold_at_most_upstream_connections(aiohttp_client, notebook):
    front = await _front(aiohttp_client, notebook["socket"],
                         ProxyConfig(max_message_size=LIMIT, upstream_connections=2))
    first = [await front.ws_connect("/user/alice/ws") for _ in range(2)]
    third = asyncio.create_task(front.ws_connect("/user/alice/ws"))
    await asyncio.sleep(0.5)
    assert not third.done()  # waits for a connection to the server, holds no new one
    await first[0].close()
    ws = await asyncio.wait_for(third, 10)
    await ws.send_str("x")
    assert await ws.receive_str() == "echo:x"
    for open_ws in (first[1], ws):
        await open_ws.close()


@pytest.mark.parametrize("path, key, status", [
    ("ws-refuse", "dGhlIHNhbXBsZSBub25jZQ==", 403),  # the server refuses the handshake
    ("ws", "", 400),  # the browser's handshake is incomplete: no Sec-WebSocket-Key
], ids=["server-refuses", "no-key"])
async def test_an_upgrade_that_fails_leaves_the_connection_working_as_http(small, path, key,
                                                                           status):
    reader, writer = await asyncio.open_connection("127.0.0.1", small.port)
    writer.write(f"GET /user/alice/{path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                 f"{'Sec-WebSocket-Key: ' + key + chr(13) + chr(10) if key else ''}"
                 "Content-Length: 0\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(f"HTTP/1.1 {status}".encode()), head
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    await reader.readexactly(length)
    # The same connection, now a plain request with a body longer than LIMIT: answered.
    body = b"~" * (4 * LIMIT)
    writer.write(b"POST /user/alice/count HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
    reply = await asyncio.wait_for(reader.read(), 5)
    assert reply.startswith(b"HTTP/1.1 200") and b'"bytes": 4000' in reply, reply
    writer.close()
