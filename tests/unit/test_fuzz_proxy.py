"""The fuzz tier, pure part: properties of the proxy's rules over generated inputs (Hypothesis).

Each property is a rule the proxy's safety rests on: which user a /user/ path reaches, which
cookies go upstream, which response headers reach the browser, where a login redirect may go.
The inputs lean on the characters that break such rules ('/', '.', '%', '%2F', '%2E', '%00',
overlong UTF-8, non-ASCII, what aiohttp gives for undecodable bytes). Examples are random on
each run (that is the point of a fuzz tier); a failure prints the falsifying example and a
@reproduce_failure blob. APPLIANCE_FUZZ_SCALE=10 runs ten times as many examples.
"""

import logging
import os
from types import SimpleNamespace
from urllib.parse import unquote, urljoin, urlsplit

import pytest

pytest.importorskip("hypothesis", reason="python3-hypothesis is not installed "
                    "(tests/infra/rootfs-packages.txt lists it; tests/run has it)")

from aiohttp import hdrs, web  # noqa: E402
from aiohttp.test_utils import make_mocked_request  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from multidict import CIMultiDict, CIMultiDictProxy  # noqa: E402

from appliance import errors  # noqa: E402
from appliance.identity import HUB_COOKIES  # noqa: E402
from appliance.pages import safe_next  # noqa: E402
from appliance.proxy import (  # noqa: E402
    ResponseScope,
    _normalise_general,
    _request_headers,
    _response_headers,
    _strip_cookies,
    normalise_service_path,
    normalise_user_path,
)

SCALE = float(os.environ.get("APPLIANCE_FUZZ_SCALE", "1"))


def fuzz(examples: int) -> settings:
    """Settings for one property: no example database (/src is read-only in the container),
    no per-example deadline (two shared cores: no timing in tests), the blob to replay a
    failure printed."""
    return settings(max_examples=int(examples * SCALE), deadline=None, database=None,
                    print_blob=True, suppress_health_check=[HealthCheck.too_slow])


# --- paths ---------------------------------------------------------------------------------

#: Pieces of path segments that have broken path rules somewhere: dot segments plain and
#: encoded, encoded separators and NUL, overlong UTF-8 for '.' and '/', broken escapes,
#: non-ASCII, and the lone surrogate aiohttp puts in raw_path for an undecodable byte (its
#: parser decodes the request target with surrogateescape).
PATH_PIECES = [
    "user", "alice", "bob", "Alice", "bob2", ".", "..", "%2E", "%2e", "%2E%2E", ".%2e",
    "%2F", "%2f", "%5C", "\\", "%00", "%", "%2", "%ZZ", "%25", "%252F", "%C0%AE", "%C0%AF",
    "%E0%80%AE", "%C3%A9", "%FF", "é", "\u202e", "\U0001f600", "\udcff", "\udcc3", ";", ":",
    "@", "~", "!", "'", "+", "%20", "api", "status", "a", "",
]
segment = st.lists(st.sampled_from(PATH_PIECES), min_size=0, max_size=3).map("".join) \
    | st.text(max_size=6)
separator = st.sampled_from(["/", "/", "/", "//"])


@st.composite
def raw_paths(draw, prefix: str = "") -> str:
    """A raw request path: pieces joined by (sometimes doubled) slashes, often /user/-rooted."""
    segments = draw(st.lists(segment, min_size=0, max_size=7))
    path = "".join(draw(separator) + seg for seg in segments)
    if draw(st.booleans()):
        path += "/"
    if not prefix and draw(st.booleans()):
        prefix = draw(st.sampled_from(["/user", "/user/", "/user/alice", "/user/bob/"]))
    return prefix + path if prefix else path or "/"


def normalised_or_refused(raw: str):
    """normalise_user_path's answer, or the BadRequest it raised (any other error fails)."""
    try:
        return normalise_user_path(raw)
    except errors.BadRequest as refused:
        return refused


@fuzz(2000)
@given(raw_paths())
def test_a_path_is_refused_or_normalised_to_one_users_prefix(raw):
    result = normalised_or_refused(raw)
    if isinstance(result, errors.BadRequest):
        return
    name, path = result
    segments = path.split("/")[1:]
    # /user/<name>/...: the second segment is the name, and a slash follows it.
    assert segments[0] == "user" and unquote(segments[1]) == name and len(segments) >= 2
    assert not name or len(segments) >= 3, path
    assert not {".", ".."} & {unquote(s) for s in segments}, path
    # What was checked is what the server gets: normalising again changes nothing.
    assert normalise_user_path(path) == (name, path)
    # The fast path is only a shortcut: the general rules give the same answer.
    general = _normalise_general(raw)
    assert general == (name, path)


@fuzz(1500)
@given(raw_paths(prefix="/user/bob/"))
def test_a_path_under_bob_never_reaches_another_user(raw):
    result = normalised_or_refused(raw)
    assert isinstance(result, errors.BadRequest) or result[0] == "bob", (raw, result)


@fuzz(1500)
@given(raw_paths(prefix="/services/stats/"))
def test_a_path_under_a_service_never_reaches_another_or_a_user(raw):
    try:
        name, path = normalise_service_path(raw)
    except errors.BadRequest:
        return
    assert name == "stats" and path.startswith("/services/stats/"), (raw, path)
    assert not {".", ".."} & {unquote(s) for s in path.split("/")}, path
    assert normalise_service_path(path) == (name, path)


# --- request headers -----------------------------------------------------------------------

TOKEN = "the-servers-own-token"
#: A value no generated cookie has by chance: if it shows up upstream, a hub cookie passed.
SECRET = "HUBSECRETe3b0c442"
# Cookie names are case-sensitive (RFC 6265 §5.4 step 1 compares names exactly; RFC 6265bis
# keeps that, and only the __Host-/__Secure- *prefix* test is case-insensitive), and the hub
# reads its cookies case-sensitively too (aiohttp's request.cookies). So "Appliance-Session"
# or "__HOST-appliance-session" is not a hub cookie: a browser never sends the hub's secret
# under it, and it may pass. The properties below check exactly that: no pair named as a hub
# cookie, and no hub cookie's value, ever goes upstream.
COOKIE_NAMES = sorted(HUB_COOKIES) + [
    "APPLIANCE-SESSION", "Appliance-Session", "__HOST-appliance-session",
    "__host-appliance-xsrf", "__Secure-appliance-session", "_xsrf", "username-127-0-0-1",
    "appliance-session2", "x", "",
]
SPACES = st.sampled_from(["", " ", "  ", "\t", " \t"])
cookie_value = st.sampled_from(['"quoted"', '"a;b"', "a=b", "", "x" * 20, '"', "é", "%3B"]) \
    | st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=8)


@st.composite
def cookie_pair(draw) -> str:
    """One name=value pair as anyone might write it: odd spacing, quotes, no '=' at all."""
    name = draw(st.sampled_from(COOKIE_NAMES) | st.text(max_size=5))
    if draw(st.integers(0, 9)) == 0:
        return draw(SPACES) + name + draw(SPACES)
    value = SECRET if name in HUB_COOKIES else draw(cookie_value)
    return draw(SPACES) + name + draw(SPACES) + "=" + draw(SPACES) + value + draw(SPACES)


cookie_header = st.lists(cookie_pair(), max_size=6).flatmap(
    lambda pairs: st.sampled_from([";", "; ", " ;", ";;", ";\t"]).map(lambda sep: sep.join(pairs)))


def cookie_names(header: str) -> list[str]:
    """Names as a browser or Tornado (Jupyter's server) splits a Cookie header: on ';',
    then at the first '=', trimmed; a pair without '=' is tried as a name too."""
    return [pair.partition("=")[0].strip() for pair in header.split(";")]


def upstream_headers(headers: list[tuple[str, str]]) -> CIMultiDict:
    """What _request_headers sends upstream for a request with these headers."""
    # A Host header: without one aiohttp asks socket.getfqdn(), a DNS round trip per example.
    headers = [("Host", "127.0.0.1:8000"), *headers]
    request = make_mocked_request("GET", "/user/bob/api/status", headers=CIMultiDict(headers))
    return _request_headers(request, TOKEN, HUB_COOKIES)


@fuzz(1500)
@given(st.lists(cookie_header, max_size=4))
def test_no_hub_cookie_is_relayed(values):
    kept = _strip_cookies(values, HUB_COOKIES)
    assert not HUB_COOKIES & set(cookie_names(kept)), kept
    assert SECRET not in kept


browser_name = st.sampled_from(COOKIE_NAMES[:-1]) \
    | st.from_regex(r"[A-Za-z0-9_!#$&'*+.^`|~-]{1,12}", fullmatch=True)
browser_value = st.from_regex(r"[A-Za-z0-9!#$%&'()*+./:<=>?@\[\]^_`{|}~-]{0,16}", fullmatch=True)


@fuzz(1000)
@given(st.lists(st.tuples(browser_name, browser_value), max_size=8), st.integers(1, 3),
       st.lists(st.sampled_from(["Authorization", "authorization", "AUTHORIZATION"]),
                max_size=3),
       st.text(max_size=20))
def test_a_browsers_cookies_pass_without_the_hubs_and_the_token_is_ours(
        pairs, headers_count, auth_names, auth_value):
    # A browser sends name=value pairs joined by "; " (RFC 6265 §5.4), an HTTP/2 front end
    # may split them over several Cookie headers (RFC 9113 §8.2.3).
    pairs = [(n, SECRET if n in HUB_COOKIES else v) for n, v in pairs]
    texts = [f"{n}={v}" for n, v in pairs]
    chunks = [texts[i::headers_count] for i in range(headers_count)]
    headers = [("Cookie", "; ".join(chunk)) for chunk in chunks if chunk]
    headers += [(name, auth_value) for name in auth_names]
    out = upstream_headers(headers)
    assert out.getall(hdrs.AUTHORIZATION) == ["token " + TOKEN]
    assert all(SECRET not in value for value in out.values())
    sent = out.getall(hdrs.COOKIE, [])
    assert len(sent) <= 1
    expected = sorted(t for (n, _), t in zip(pairs, texts, strict=True) if n not in HUB_COOKIES)
    assert sorted(p for p in "; ".join(sent).split("; ") if p) == expected


# --- response headers ----------------------------------------------------------------------

SCOPE = ResponseScope(HUB_COOKIES, "/user/bob/", "http://127.0.0.1:8000")
attr_name = st.sampled_from(["Path", "path", "PATH", " Path ", "Domain", "domain", " DOMAIN",
                             "Secure", "HttpOnly", "SameSite", "Max-Age", "Expires", "x"])
attr_value = st.sampled_from([
    "/", "/user/bob/", "/user/bob", "/user/bob/x", "/user/bobby", "/user/bob2/", "/user/",
    "/user/alice/", "/hub/", "/hub", "/user/bob/../../hub", "/user/bob/%2E%2E/", "/USER/BOB/",
    " /user/bob/ ", "127.0.0.1", ".127.0.0.1", "", "None", "Lax", "0",
]) | st.text(max_size=6)


@st.composite
def set_cookie(draw) -> str:
    """A Set-Cookie value a student's server might send: any name (hub ones included), any
    attributes in any case and order, repeated, with odd spacing."""
    name = draw(st.sampled_from(COOKIE_NAMES) | st.text(max_size=5))
    head = name + draw(st.sampled_from(["=", "=v", " = v", "", "==x", "=a=b"]))
    attrs = draw(st.lists(st.tuples(attr_name, st.sampled_from(["=", " = ", ""]), attr_value),
                          max_size=4))
    return head + "".join(f";{draw(SPACES)}{k}{eq}{v}" for k, eq, v in attrs)


def browser_view(value: str) -> tuple[str, str | None, bool]:
    """(name, path, has_domain) as a browser reads a Set-Cookie (RFC 6265 §5.2): the name
    trimmed, attribute names case-insensitive, the last Path wins."""
    head, *attrs = value.split(";")
    name = head.partition("=")[0].strip() if "=" in head else ""
    path, domain = None, False
    for attr in attrs:
        key, _, val = attr.partition("=")
        key = key.strip().lower()
        if key == "path":
            path = val.strip()
        domain = domain or key == "domain"
    return name, path, domain


other_header = st.tuples(
    st.sampled_from(["Service-Worker-Allowed", "service-worker-allowed", "Clear-Site-Data",
                     "CLEAR-SITE-DATA", "Access-Control-Allow-Origin",
                     "access-control-allow-origin", "Access-Control-Allow-Credentials",
                     "Content-Type", "Connection", "X-Other"]),
    st.sampled_from(["/", '"*"', "http://127.0.0.1:8000", " http://127.0.0.1:8000",
                     "http://127.0.0.1:9999", "null", "*", "true", "set-cookie", "x-other",
                     "http://127.0.0.1:8000, http://127.0.0.1:9999"]) | st.text(max_size=8))


@fuzz(1500)
@given(st.lists(set_cookie(), max_size=4), st.lists(other_header, max_size=5), st.randoms())
def test_what_a_user_server_sends_back_stays_in_its_prefix(cookies, others, rnd):
    headers = [("Set-Cookie", c) for c in cookies] + others
    rnd.shuffle(headers)
    response = SimpleNamespace(headers=CIMultiDictProxy(CIMultiDict(headers)))
    out = _response_headers(response, SCOPE)
    for value in out.getall(hdrs.SET_COOKIE, []):
        name, path, domain = browser_view(value)
        assert name and name not in HUB_COOKIES and not domain, value
        # No Path: the request's directory, inside the prefix (RFC 6265 §5.1.4).
        assert path is None or path.startswith(SCOPE.prefix) or path == "/user/bob", value
    assert "Service-Worker-Allowed" not in out and "Clear-Site-Data" not in out
    assert all(v.strip() == SCOPE.origin for v in out.getall("Access-Control-Allow-Origin", []))


# --- the hub's own parsing: where a login may send the browser -------------------------------

HUB = "http://127.0.0.1:8000/hub/login"
next_piece = st.sampled_from(["/", "//", "\\", "/\\", "\t", "\n", "\r", " ", "\x00", "\x0b",
                              "%2F", "%5C", "evil.example", "https:", "javascript:", ":", "@",
                              "?", "#", ".", "..", "user", "é", "\u3000", "\uff0f", "\u2215",
                              "\ufe68", "\uff3c", "\x7f"])
# Most targets start like a path; what follows is where a second slash can hide from the
# check and reappear in the browser (tab, newline, backslash, fullwidth solidus).
next_piece = next_piece | st.sampled_from(["\t/", "\r\n/", " /", "\\/", "/\t"])
next_target = st.tuples(st.sampled_from(["/", "/", "//", ""]), st.lists(next_piece, max_size=6)) \
    .map(lambda t: t[0] + "".join(t[1])) | st.text(max_size=12)


def browser_resolves(location: str) -> str:
    """The host a browser goes to for a Location on the login page: the WHATWG URL parser
    drops tabs and newlines anywhere and C0 controls and spaces at either end, and reads
    '\\' as '/' in http(s) URLs."""
    cleaned = location.replace("\t", "").replace("\n", "").replace("\r", "")
    cleaned = cleaned.strip("".join(map(chr, range(0x21)))).replace("\\", "/")
    return urlsplit(urljoin(HUB, cleaned)).netloc


@fuzz(1500)
@given(next_target)
def test_after_login_the_browser_stays_on_the_hub(target):
    result = safe_next(target)
    assert result.startswith("/") and not result.startswith("//") and "\\" not in result
    location = web.HTTPFound(result).headers["Location"]  # what the hub sends, after yarl
    assert browser_resolves(location) == "127.0.0.1:8000", (target, location)


@pytest.fixture(autouse=True, scope="module")
def _quiet_proxy_warnings():
    """The proxy logs a warning per dropped cookie; thousands of examples need not show."""
    logger = logging.getLogger("appliance.proxy")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)
