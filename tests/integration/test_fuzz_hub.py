"""The fuzz tier against a running hub: generated requests from a logged-in user (Hypothesis).

The real `notebook-appliance serve` runs as its own process (so Hypothesis's synchronous
examples need no event loop), with real PAM users: bob's real Jupyter server is running,
alice is logged in (session cookie, CSRF token) and has an API token. Each example is one
request alice's client sends over a raw socket, so the path reaches the hub byte for byte as
generated (no client library normalises it): any method, paths under /hub/ and /user/ built
from the route words, both names (encoded, upper-cased), dot segments, encoded separators and
bytes that are not UTF-8, a query, Cookie/Origin/Authorization/X-XSRFToken/Sec-Fetch-Site/
websocket headers, and a form, JSON or text body. Properties: no answer is a 5xx; no answer
comes from a Jupyter server (alice's is not running, and bob's must never be reached: Tornado
marks every answer with `Server: TornadoServer/…`, checked on bob's own request first); no
/user/<bob>/ path gets a 2xx or 101. That no hub cookie reaches a server is the unit tier's
property (tests/unit/test_fuzz_proxy.py): here no request reaches another user's server at all.
"""

import http.client
import os
import socket
from dataclasses import dataclass
from urllib.parse import quote, unquote

import pytest

pytest.importorskip("hypothesis", reason="python3-hypothesis is not installed "
                    "(tests/infra/rootfs-packages.txt lists it; tests/run has it)")

from hypothesis import HealthCheck, assume, event, given, note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from appliance.identity import SESSION_COOKIE, XSRF_COOKIE  # noqa: E402
from tests.ports import free_port  # noqa: E402

from .browser import Browser  # noqa: E402
from .conftest import booted, cli  # noqa: E402

pytestmark = [pytest.mark.systemd, pytest.mark.pam,
              pytest.mark.skipif(not booted(), reason="creates users and starts a server; "
                                 "only in the throwaway container")]

#: Under 10 ms each here: about 40 s (APPLIANCE_FUZZ_SCALE multiplies).
EXAMPLES = int(5000 * float(os.environ.get("APPLIANCE_FUZZ_SCALE", "1")))


@dataclass(frozen=True)
class Scene:
    """The running hub and what alice's client may put in a request."""

    port: int
    alice: str
    bob: str
    session: str
    xsrf: str
    token: str

    @property
    def origin(self) -> str:
        """The hub's own origin."""
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def scene(hub_config, serve_hub, make_user):
    """A hub process; bob's server running (and reached by bob himself); alice logged in."""
    alice, bob = make_user(), make_user()
    port = free_port()
    cfg = hub_config(hub={"port": port})
    await serve_hub(cfg)
    base = f"http://127.0.0.1:{port}"
    async with Browser(base) as b:
        await b.login(bob.name, bob.password)
        async with b.request("POST", f"/hub/spawn/{bob.name}", data={"_xsrf": b.xsrf}):
            pass
        assert (await b.progress(bob.name))[-1]["ready"]
        # The detector works: bob's own request is answered by his Jupyter server.
        async with b.request("GET", f"/user/{bob.name}/api/status") as r:
            assert r.status == 200 and "TornadoServer" in r.headers.get("Server", "")
    async with Browser(base) as a:
        await a.login(alice.name, alice.password)
        session = [c.value for c in a.session.cookie_jar if c.key == SESSION_COOKIE][0]
        xsrf = a.xsrf
    yield Scene(port, alice.name, bob.name, session, xsrf, cli(cfg, "token", alice.name))
    async with Browser(base, token=cli(cfg, "token", bob.name)) as b:
        async with b.request("DELETE", f"/hub/api/users/{bob.name}/server"):
            pass


# --- what alice's client may send ----------------------------------------------------------

def encoded(name: str) -> str:
    """Every character of name percent-encoded."""
    return "".join(f"%{b:02X}" for b in name.encode())


ROUTE_WORDS = ["hub", "api", "user", "users", "server", "servers", "progress", "spawn",
               "spawn-pending", "stop", "new-server", "remove", "login", "logout", "home",
               "static", "style.css", "status", "kernels", "sessions", "contents", "tree",
               "lab", "files", "terminals", "channels", "token", "x"]
TRICKS = [".", "..", "%2E", "%2E%2E", ".%2e", "%2F", "%2f", "%5C", "\\", "%00", "%FF",
          "%C0%AE", "%C0%AF", "\udcff", "é", "%C3%A9", ";", "@", "~", "%25", "%", ""]


def path_pieces(s: Scene) -> st.SearchStrategy[str]:
    """One path segment: route words, both names in several spellings, and tricks."""
    names = [s.alice, s.bob, s.bob.upper(), encoded(s.bob), s.bob + ".", s.bob[:-1]]
    return st.lists(st.sampled_from(ROUTE_WORDS + names + TRICKS), min_size=1, max_size=2) \
        .map("".join)


@st.composite
def paths(draw, s: Scene) -> str:
    """A request path, mostly under /hub/ or /user/, with (sometimes doubled) slashes."""
    start = draw(st.sampled_from([
        "/hub/", "/hub/api/", f"/hub/api/users/{s.bob}/", "/user/", f"/user/{s.bob}/",
        f"/user/{s.bob}/api/", f"/user/{encoded(s.bob)}/", f"/hub/spawn/{s.bob}/", "/", "//",
        f"/user/{s.alice}/../{s.bob}/", f"/user/{s.alice}/%2E%2E/{s.bob}/"]))
    tail = draw(st.lists(path_pieces(s), max_size=5))
    seps = draw(st.lists(st.sampled_from(["/", "/", "//"]), min_size=len(tail),
                         max_size=len(tail)))
    path = start + "".join(seg + sep for seg, sep in zip(tail, seps, strict=True))
    return path.rstrip("/") or "/" if draw(st.booleans()) else path


def queries(s: Scene) -> st.SearchStrategy[str]:
    """A query string: redirect targets, a token, a CSRF token, or junk."""
    items = st.sampled_from([
        "next=//evil.example/", "next=%2F%2Fevil.example", "next=/%5Cevil.example",
        "next=https://evil.example/", f"next=/user/{s.bob}/", "next=%09/evil.example",
        "next=/%09///evil.example", f"token={s.token}", f"_xsrf={s.xsrf}", "profile=large",
        "remove=true", "x=%FF", "a", "=", "&&"])
    return st.lists(items, max_size=3).map(lambda qs: "?" + "&".join(qs) if qs else "")


def header_sets(s: Scene) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Cookie, Origin, Authorization, X-XSRFToken, Sec-Fetch-Site, Accept and websocket
    headers, each present or not, with right, wrong and foreign values."""
    cookie = st.sampled_from([
        f"{SESSION_COOKIE}={s.session}", f"{SESSION_COOKIE}={s.session}; {XSRF_COOKIE}="
        f"{s.xsrf}", f"{SESSION_COOKIE}=forged", f"{SESSION_COOKIE}={s.session}x",
        f"{SESSION_COOKIE}=", f"__Host-{SESSION_COOKIE}={s.session}", f"APPLIANCE-SESSION="
        f"{s.session}", f'{SESSION_COOKIE}="{s.session}"', f"a=1;;{SESSION_COOKIE}={s.session}",
        "=;=;", "x=\"unterminated", f"{SESSION_COOKIE}=\udcff", f"{XSRF_COOKIE}=\udcff",
        f"{SESSION_COOKIE}={s.session}; {SESSION_COOKIE}=forged"])
    options = {
        "Cookie": cookie,
        "Origin": st.sampled_from([s.origin, "null", "http://127.0.0.1:9999",
                                   s.origin.upper(), s.origin + "/", ""]),
        "Authorization": st.sampled_from([f"token {s.token}", f"bearer {s.token}",
                                          f"Token  {s.token}", "token forged", "token ",
                                          f"Basic {s.token}", "token \udcff"]),
        "X-XSRFToken": st.sampled_from([s.xsrf, s.xsrf + "x", "", "forged"]),
        "Sec-Fetch-Site": st.sampled_from(["same-origin", "same-site", "cross-site", "none"]),
        "Accept": st.sampled_from(["text/html", "application/json", "*/*"]),
    }
    chosen = st.fixed_dictionaries({}, optional=options).map(lambda d: list(d.items()))
    websocket = st.sampled_from([[], [("Connection", "Upgrade"), ("Upgrade", "websocket"),
                                      ("Sec-WebSocket-Version", "13"),
                                      ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]])
    return st.tuples(chosen, websocket).map(lambda t: t[0] + t[1])


def bodies(s: Scene) -> st.SearchStrategy[tuple[str, bytes]]:
    """(Content-Type, body): a form, JSON, plain text or nothing."""
    form_field = st.tuples(
        st.sampled_from(["_xsrf", "username", "password", "next", "profile", "name", "x"]),
        st.sampled_from([s.xsrf, s.bob, s.alice, "wrong", "//evil.example/", "large",
                         "é", "", "%FF", "a" * 300]))
    form = st.lists(form_field, max_size=4).map(
        lambda fs: ("application/x-www-form-urlencoded",
                    "&".join(f"{quote(k)}={quote(v)}" for k, v in fs).encode()))
    json_body = st.sampled_from([b"{}", b'{"profile": "large"}', b'{"profile": 1}', b"[]",
                                 b'"x"', b"{", b'{"remove": true}', b"null", b"\xff"]) \
        .map(lambda b: ("application/json", b))
    text = st.binary(max_size=40).map(lambda b: ("text/plain", b))
    return st.one_of(st.just(("", b"")), form, json_body, text)


# --- sending ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    """What the hub answered."""

    status: int
    server: str
    location: str
    body: bytes


def send(port: int, method: str, target: str, headers: list[tuple[str, str]],
         content_type: str, body: bytes) -> Answer:
    """One request over a raw socket: the target goes out byte for byte (a lone surrogate as
    the byte it stands for, as aiohttp would read it back)."""
    lines = [f"{method} ".encode() + target.encode("utf-8", "surrogateescape") + b" HTTP/1.1",
             f"Host: 127.0.0.1:{port}".encode(), b"Connection: close"]
    lines += [f"{k}: {v}".encode("utf-8", "surrogateescape") for k, v in headers]
    if content_type:
        lines.append(f"Content-Type: {content_type}".encode())
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}".encode())
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        if response.status == 101:  # a websocket was opened: nothing to read, and it stays open
            data = b""
        else:
            try:
                data = response.read(64 * 1024)
            except http.client.IncompleteRead as e:  # a stream cut at Connection: close
                data = e.partial
        return Answer(response.status, response.getheader("Server", ""),
                      response.getheader("Location", ""), data)


def changes_alices_state(s: Scene, method: str, path: str) -> bool:
    """A write that names alice, or a logout: it would start her server or end her session,
    and every later example would test a different hub. Writes naming bob stay in."""
    if method in ("GET", "HEAD", "OPTIONS"):
        return False
    decoded = unquote(unquote(path)).lower()
    return s.alice.lower() in decoded or "logout" in decoded


def names_bob_under_user(s: Scene, path: str) -> bool:
    """Whether the decoded path has /user/<bob> in it, in any spelling."""
    return f"user/{s.bob.lower()}" in unquote(path).lower().replace("//", "/")


@st.composite
def requests(draw, s: Scene):
    """One request alice's client sends."""
    method = draw(st.sampled_from(["GET", "GET", "POST", "POST", "DELETE", "PUT", "HEAD",
                                   "OPTIONS", "PATCH", "PROPFIND"]))
    path = draw(paths(s))
    assume(not changes_alices_state(s, method, path))
    return method, path + draw(queries(s)), draw(header_sets(s)), *draw(bodies(s))


# The scene is set up once for all examples (a real server start), on purpose.
@settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
@given(data=st.data())
def test_no_request_gets_a_5xx_or_reaches_another_users_server(scene, data):
    method, target, headers, content_type, body = data.draw(requests(scene))
    answer = send(scene.port, method, target, headers, content_type, body)
    note(f"answer: {answer.status} Server={answer.server!r} Location={answer.location!r} "
         f"body={answer.body[:200]!r}")
    event(f"status {answer.status}")  # the spread, under --hypothesis-show-statistics
    assert answer.status < 500
    assert "TornadoServer" not in answer.server  # no Jupyter server answered at all
    if answer.location:  # every redirect stays on the hub
        assert answer.location.startswith("/") and not answer.location.startswith("//")
        assert "\\" not in answer.location
    if names_bob_under_user(scene, target.partition("?")[0]):
        assert not (200 <= answer.status < 300 or answer.status == 101)
