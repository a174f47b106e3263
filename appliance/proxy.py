"""Reverse proxy from /user/<name>/… to each user's notebook server on its UNIX socket.

Modelled on home-assistant supervisor's ingress proxy (api/ingress.py): header filtering,
streamed bodies both ways, and a websocket relay with one task per direction.

TCP_NODELAY toward the browser is already on: in aiohttp 3.8.4 web_protocol.RequestHandler
.connection_made() calls BaseProtocol.connection_made(), which calls tcp_nodelay(tr, True)
(base_protocol.py). Toward the notebook server there is no TCP: it is a UNIX socket.
"""

import asyncio
import logging
import re
from dataclasses import dataclass
from urllib.parse import unquote

import aiohttp
from aiohttp import WSMsgType, hdrs, web
from multidict import CIMultiDict
from yarl import URL

from appliance import errors
from appliance.framelimit import MESSAGE_TOO_BIG, FrameLimit
from appliance.units import quote_segment
from appliance.upstream import Upstream

log = logging.getLogger(__name__)

#: RFC 7230 §6.1 hop-by-hop headers (plus Keep-Alive and Proxy-Connection, which old
#: clients still send); headers named in Connection are dropped as well.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
})
# Never forwarded upstream: replaced by our own values (Authorization, X-*), rebuilt without the
# hub's cookies (Cookie), already answered by the hub's server (Expect: 100-continue), or
# negotiated again by ws_connect on the upstream hop (Sec-WebSocket-*).
_REQUEST_DROP = HOP_BY_HOP | {
    "authorization", "cookie", "expect", "x-real-ip", "x-forwarded-for",
    "x-forwarded-proto", "x-forwarded-host", "sec-websocket-key", "sec-websocket-version",
    "sec-websocket-extensions", "sec-websocket-protocol",
}
# Kept unencoded when re-quoting path segments: RFC 3986 sub-delims, ':' and '@' (pchar).
_PLAIN_PATH = re.compile(r"/user/[\w:@!$&'()*+,;=.~-]+(/[\w:@!$&'()*+,;=.~-]*)*", re.ASCII)
_FORBIDDEN_IN_SEGMENT = ("/", "\\", "\x00")
# Bodies up to this size are read whole and sent in one write: one syscall, lower latency.
SMALL_BODY = 64 * 1024
# RFC 6455 §7.4.1: 1005, 1006 and 1015 must never be sent in a Close frame.
_UNSENDABLE_CLOSE = {None, 1004, 1005, 1006, 1015}
# A close with no status code: RFC 6455 calls it 1005, aiohttp reports it as 0. Relayed as a
# normal close (1000), the nearest code that may be sent.
_NO_STATUS = {0, 1005}


# Path rules (callers rely on them): segments are percent-decoded (invalid UTF-8, or a decoded
# '/', '\\' or NUL, is refused); empty segments collapse; '.' and '..' are resolved over the
# whole path (RFC 3986 §5.2.4) before the username is read, and a '..' that would pop the
# username or 'user' is refused even if the path climbs back; '/user' and '/user/' give
# ('', '/user/'). The username is returned decoded and untouched otherwise.
def normalise_user_path(raw_path: str) -> tuple[str, str]:
    """Split a raw /user/<name>/… path into (username, normalised quoted path to forward)."""
    # Fast path for the common case: nothing to decode, collapse or resolve, and every
    # character is one quote() keeps, so the general rules would return it unchanged.
    if _PLAIN_PATH.fullmatch(raw_path) and "//" not in raw_path and "/." not in raw_path:
        name, slash, _ = raw_path[6:].partition("/")
        return name, raw_path if slash else raw_path + "/"
    return _normalise_general(raw_path)


def normalise_service_path(raw_path: str) -> tuple[str, str]:
    """Split a raw /services/<name>/… path into (service name, normalised quoted path), by
    the same rules as normalise_user_path."""
    return _normalise_general(raw_path, "services")


def _normalise_general(raw_path: str, root: str = "user") -> tuple[str, str]:
    """normalise_user_path for any input: decode, collapse, resolve dot segments, re-quote."""
    segments = [_decode_segment(seg) for seg in raw_path.split("/") if seg]
    stack: list[str] = []
    for seg in segments:
        if seg == "..":
            if len(stack) <= 2:  # would drop the username or /user/ itself: never re-target
                raise errors.BadRequest(f"path climbs out of its {root}: {raw_path!r}")
            stack.pop()
        elif seg != ".":
            stack.append(seg)
    if not stack or stack[0] != root:
        raise errors.BadRequest(f"not a /{root}/ path: {raw_path!r}")
    name = stack[1] if len(stack) > 1 else ""
    # RFC 3986 §5.2.4: a final "." or ".." leaves a trailing slash behind.
    trailing = raw_path.endswith("/") or (bool(segments) and segments[-1] in (".", ".."))
    path = "/".join(quote_segment(seg) for seg in stack)
    if len(stack) <= 2 or trailing:
        path += "/"
    return name, "/" + path


def _decode_segment(segment: str) -> str:
    """Percent-decode one path segment, refusing encoded separators, NUL and bad UTF-8."""
    try:
        decoded = unquote(segment, errors="strict")
        # aiohttp's parser decodes the request target with surrogateescape, so a raw byte
        # that is not UTF-8 arrives as a lone surrogate that quote() cannot encode (it was a
        # 500; found by tests/unit/test_fuzz_proxy.py with raw='/user/\udcff').
        decoded.encode("utf-8")
    except UnicodeError as err:
        raise errors.BadRequest(f"path segment is not UTF-8: {segment!r}") from err
    if any(ch in decoded for ch in _FORBIDDEN_IN_SEGMENT):
        raise errors.BadRequest(f"encoded separator or NUL in path segment: {segment!r}")
    return decoded


async def relay(request: web.Request, upstream: Upstream, path: str, *,
                hub_cookies: frozenset[str], websockets: set | None = None,
                prefix: str = "/", touch=None) -> web.StreamResponse:
    """Relay one request (plain HTTP or websocket upgrade) to upstream at path (+ query).

    prefix is the server's own URL space (/user/<name>/): cookies it sets must stay inside.
    Open browser websockets are kept in `websockets` while they last, for close_all().
    touch() is called for every websocket message either way (activity, for the culler).
    """
    query = request.raw_path.partition("?")[2]
    url = URL.build(scheme="http", host="notebook", path=path, query_string=query,
                    encoded=True)
    headers = _request_headers(request, None if upstream.relay_authorization
                               else upstream.token, hub_cookies)
    if _is_websocket(request):
        return await _relay_websocket(request, upstream, url, headers,
                                      set() if websockets is None else websockets, touch)
    scope = ResponseScope(hub_cookies, prefix, f"{request.scheme}://{request.host}")
    return await _relay_http(request, upstream, url, headers, scope)


def _connection_tokens(headers) -> set[str]:
    """Header names listed in Connection (RFC 7230 §6.1), lowercased."""
    return {token.strip().lower() for value in headers.getall(hdrs.CONNECTION, ())
            for token in value.split(",")}


def _drop_set(headers, always: frozenset[str]) -> frozenset[str] | set[str]:
    """`always` plus whatever Connection names; no new set in the common case."""
    return always | _connection_tokens(headers) if hdrs.CONNECTION in headers else always


def _is_websocket(request: web.Request) -> bool:
    """Whether the request asks to upgrade to a websocket (RFC 6455 §4.1)."""
    return (request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
            and "upgrade" in _connection_tokens(request.headers))


def _request_headers(request: web.Request, token: str | None,
                     hub_cookies: frozenset[str]) -> CIMultiDict:
    """Headers for upstream: filtered, with our token (None: the client's own Authorization,
    for a service or a server that checks credentials with the hub itself), cookies and
    X-Forwarded-*."""
    incoming = request.headers
    drop = _drop_set(incoming, _REQUEST_DROP)
    headers = CIMultiDict((k, v) for k, v in incoming.items() if k.lower() not in drop)
    cookies = _strip_cookies(incoming.getall(hdrs.COOKIE, ()), hub_cookies)
    if cookies:
        headers[hdrs.COOKIE] = cookies
    if token is not None:
        headers[hdrs.AUTHORIZATION] = "token " + token
    elif hdrs.AUTHORIZATION in incoming:
        headers[hdrs.AUTHORIZATION] = incoming[hdrs.AUTHORIZATION]
    remote = request.remote
    if remote:
        before = incoming.get(hdrs.X_FORWARDED_FOR)
        headers[hdrs.X_FORWARDED_FOR] = f"{before}, {remote}" if before else remote
        headers["X-Real-IP"] = remote
    headers[hdrs.X_FORWARDED_PROTO] = request.scheme
    headers[hdrs.X_FORWARDED_HOST] = request.host
    return headers


def _strip_cookies(values: list[str], hub_cookies: frozenset[str]) -> str:
    """The Cookie header without the hub's own cookies (RFC 6265 §4.2)."""
    kept = [pair.strip() for value in values for pair in value.split(";")]
    return "; ".join(p for p in kept if p and p.partition("=")[0].strip() not in hub_cookies)


@dataclass(frozen=True)
class ResponseScope:
    """What a user's server may do to the browser: every server answers on the hub's origin,
    so the proxy decides which of its response headers may act beyond its own URL space."""

    hub_cookies: frozenset[str]
    #: The server's URL prefix (/user/<name>/): its cookies must stay under it.
    prefix: str
    #: The hub's origin (scheme://host:port), the only one CORS headers may grant.
    origin: str


def _response_headers(response: aiohttp.ClientResponse, scope: ResponseScope) -> CIMultiDict:
    """Headers for the browser: hop-by-hop removed, and nothing that acts on the whole origin:
    no Service-Worker-Allowed (a worker for all of it), no Clear-Site-Data (the hub's session
    too), no cookie outside the server's prefix or for another domain, no CORS grant to
    another origin."""
    drop = _drop_set(response.headers, HOP_BY_HOP) | _ORIGIN_WIDE
    grants = response.headers.getall(hdrs.ACCESS_CONTROL_ALLOW_ORIGIN, ())
    foreign_cors = any(g.strip() != scope.origin for g in grants)
    headers: CIMultiDict = CIMultiDict()
    for name, value in response.headers.items():
        lname = name.lower()
        if lname in drop or (foreign_cors and lname.startswith("access-control-")):
            continue
        if lname == "set-cookie" and not _cookie_in_scope(value, scope):
            continue
        headers.add(name, value)
    return headers


#: Response headers a user's server never sends to the browser (their effect is origin-wide).
_ORIGIN_WIDE = frozenset({"service-worker-allowed", "clear-site-data"})


def _cookie_in_scope(set_cookie: str, scope: ResponseScope) -> bool:
    """Whether a server's Set-Cookie stays its own: not a hub cookie, no Domain attribute,
    and a Path inside its prefix (RFC 6265 §5.1.4 path-match; no Path means the request's
    directory, which is inside)."""
    if _sets_hub_cookie(set_cookie, scope.hub_cookies):
        return False
    for attribute in set_cookie.split(";")[1:]:
        key, _, value = attribute.strip().partition("=")
        key, value = key.strip().lower(), value.strip()
        if key == "domain":
            log.warning("dropped Set-Cookie with a Domain from a notebook server")
            return False
        if key == "path" and not (value.startswith(scope.prefix)
                                  or value == scope.prefix.rstrip("/")):
            log.warning("dropped Set-Cookie for path %r from a notebook server", value)
            return False
    return True


def _sets_hub_cookie(set_cookie: str, hub_cookies: frozenset[str]) -> bool:
    """Whether a Set-Cookie value could set (or shadow) one of the hub's cookies."""
    name, eq, _ = set_cookie.partition(";")[0].partition("=")
    name = name.strip()
    if not eq or not name:
        # A nameless cookie ("=hub=x") is sent back as "hub=x" (RFC 6265bis §5.6): refuse it.
        log.warning("dropped nameless Set-Cookie from a notebook server")
        return True
    if name in hub_cookies:
        log.warning("dropped Set-Cookie for hub cookie %r from a notebook server", name)
        return True
    return False


async def _relay_http(request: web.Request, upstream: Upstream, url: URL,
                      headers: CIMultiDict, scope: ResponseScope) -> web.StreamResponse:
    """Relay a plain HTTP request; stream large bodies both ways."""
    try:
        result = await upstream.session.request(
            request.method, url, headers=headers, data=await _request_body(request),
            allow_redirects=False)
    except aiohttp.ClientConnectionError as err:
        raise _upstream_error(upstream, err) from err
    async with result:  # releases the connection; a half-read one is closed, not pooled
        out_headers = _response_headers(result, scope)
        if _must_be_empty(request.method, result.status):
            return web.Response(status=result.status, reason=result.reason,
                                headers=out_headers)
        if result.content_length is not None and result.content_length <= SMALL_BODY:
            return web.Response(status=result.status, reason=result.reason,
                                headers=out_headers, body=await _read_small(result, upstream))
        return await _stream_response(request, result, out_headers)


async def _read_small(result: aiohttp.ClientResponse, upstream: Upstream) -> bytes:
    """Read a small sized body whole; nothing has gone to the browser yet."""
    try:
        return await result.read()
    except aiohttp.ClientError as err:
        raise _upstream_error(upstream, err) from err


async def _request_body(request: web.Request):
    """The body to send: bytes when small and sized, else the stream itself, or None."""
    if not request.body_exists:
        return None
    length = request.content_length
    if length is not None and length <= SMALL_BODY:
        return await request.read()
    return request.content


def _must_be_empty(method: str, status: int) -> bool:
    """Whether a response carries no body (RFC 7230 §3.3.3)."""
    return method == hdrs.METH_HEAD or status in (204, 304) or status < 200


async def _stream_response(request: web.Request, result: aiohttp.ClientResponse,
                           headers: CIMultiDict) -> web.StreamResponse:
    """Copy a large or unsized response body chunk by chunk, never holding it whole."""
    response = web.StreamResponse(status=result.status, reason=result.reason, headers=headers)
    await response.prepare(request)
    try:
        async for chunk in result.content.iter_any():
            await response.write(chunk)
    except aiohttp.ClientError as err:
        # Headers are gone already: no error page is possible. Cut the connection so the
        # browser sees a broken transfer instead of a complete-looking truncated file.
        log.warning("notebook server broke off a response to %r: %s", request.path, err)
        if request.transport is not None:
            request.transport.close()
    return response


def _upstream_error(upstream: Upstream, err: Exception) -> errors.UpstreamError:
    """An UpstreamError naming the socket and what to check."""
    log.warning("cannot reach %s at %s: %s", upstream.label, upstream.where, err)
    if upstream.label != "notebook server":
        return errors.UpstreamError(
            f"{upstream.label} at {upstream.where} unreachable: {err}; check that it runs",
            user_message=f"The {upstream.label} is not answering. Try again in a moment.")
    return errors.UpstreamError(
        f"notebook server at {upstream.socket_path} unreachable: {err}; "
        "check that the user's notebook service is running",
        user_message="Your notebook server is not answering. Try again in a moment.")


async def _relay_websocket(request: web.Request, upstream: Upstream, url: URL,
                           headers: CIMultiDict, websockets: set,
                           touch=None) -> web.StreamResponse:
    """Open the upstream websocket first, then accept the browser's and relay both ways."""
    limit = upstream.max_message_size
    if request.transport is not None:
        # Nothing more is read from the browser until its FrameLimit is on: aiohttp would keep
        # bytes sent before the 101 (RFC 6455 §4.1 forbids them) unbounded and unwatched
        # while the user's server takes its time to answer the handshake.
        request.transport.pause_reading()
    protocols = [p.strip() for value in request.headers.getall(hdrs.SEC_WEBSOCKET_PROTOCOL, ())
                 for p in value.split(",") if p.strip()]
    try:
        # max_msg_size (aiohttp refuses sizes >= it): a backstop behind the FrameLimits. On
        # its own, in 3.8.4-1+deb12u1 and 3.11, it buffers a frame whole before refusing it.
        ws_up = await upstream.ws_session.ws_connect(
            url, headers=headers, protocols=protocols, max_msg_size=limit + 1, compress=0,
            heartbeat=None, autoping=True)
    except BaseException as err:
        if request.transport is not None:
            request.transport.resume_reading()  # no websocket: the connection goes on as HTTP
        if isinstance(err, aiohttp.WSServerHandshakeError):
            status = err.status if err.status >= 400 else 502
            return web.Response(status=status, text=f"notebook server refused: {err.status}")
        if isinstance(err, aiohttp.ClientConnectionError):
            raise _upstream_error(upstream, err) from err
        raise
    up_limit = FrameLimit.on(ws_up.get_extra_info("socket"))
    try:
        # compress=False: Jupyter's server does not compress either, and deflate would run
        # on the hub's single event loop.
        ws_down = web.WebSocketResponse(
            protocols=(ws_up.protocol,) if ws_up.protocol else (),
            autoping=True, max_msg_size=limit + 1, compress=False)
        down_limit = await _prepare_watched(ws_down, request, limit)
        websockets.add(ws_down)
        await _pump_both_ways(ws_down, ws_up, down_limit, up_limit, touch or _nothing)
    finally:
        websockets.discard(ws_down)
        await ws_up.close()
    return ws_down


async def _prepare_watched(ws: web.WebSocketResponse, request: web.Request,
                           limit: int) -> FrameLimit | None:
    """Send the 101 with a FrameLimit already on the browser's connection: a client sends no
    frame before the 101 (RFC 6455 §4.1), so it sees them all. No upgrade, no FrameLimit."""
    if request.transport is None:  # the browser has gone: prepare() says so
        await ws.prepare(request)
        return None
    watch = FrameLimit.install(request.transport, limit, client=False)
    request.transport.resume_reading()  # paused by _relay_websocket
    try:
        await ws.prepare(request)
    except BaseException:
        watch.remove()  # not a websocket after all: the connection goes on as HTTP
        raise
    return watch


async def close_all(websockets: set) -> None:
    """Hub shutdown: close browser websockets with 1001 "going away" (RFC 6455 §7.4.1).

    Jupyter's front end reconnects on its own, to the restarted hub; without this, aiohttp's
    shutdown would wait its full timeout for these long-lived handlers.
    """
    await asyncio.gather(*(ws.close(code=1001, message=b"hub restarting")
                           for ws in list(websockets)), return_exceptions=True)


def _nothing() -> None:
    """No activity to record."""


async def _pump_both_ways(ws_down: web.WebSocketResponse,
                          ws_up: aiohttp.ClientWebSocketResponse,
                          down_limit: FrameLimit | None, up_limit: FrameLimit | None,
                          touch) -> None:
    """Run one task per direction until either side closes; leave no task behind."""
    tasks = [asyncio.create_task(_pump(ws_down, ws_up, down_limit, touch)),
             asyncio.create_task(_pump(ws_up, ws_down, up_limit, touch))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
    failures = [task.exception() for task in tasks if not task.cancelled()]
    for failure in failures:
        if failure is not None:
            raise failure


async def _pump(src, dst, src_limit: FrameLimit | None, touch) -> None:
    """Copy data frames src→dst (each one touch()es, for the culler); when src closes, close
    dst with the same code (1009 when src's FrameLimit refused a message: the other side
    learns why, RFC 6455 §7.4.1)."""
    # Pings are answered on each hop (autoping) and do not surface here.
    try:
        async for msg in src:
            touch()
            if msg.type is WSMsgType.TEXT:
                await dst.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await dst.send_bytes(msg.data)
            elif msg.type is WSMsgType.ERROR:
                log.info("websocket relay error: %s", msg.data)
                break
    except ConnectionResetError as err:  # dst went away mid-send
        log.info("websocket peer went away: %s", err)
        await src.close(code=1001)
        return
    code = MESSAGE_TOO_BIG if src_limit is not None and src_limit.refused else src.close_code
    await dst.close(code=1000 if code in _NO_STATUS else 1001 if code in _UNSENDABLE_CLOSE
                    else code)
