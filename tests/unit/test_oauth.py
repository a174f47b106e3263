"""The OAuth provider's pure parts (oauth.py, hubenv.py): client ids, redirect URIs, codes
(single use, expiry, PKCE), scope narrowing and the confirmation rule, as JupyterHub has them."""

import pytest

from appliance import hubenv, oauth, scopes
from appliance.config import defaults
from appliance.oauth import Clients, OAuthError
from appliance.roles import Roles


class Clock:
    """An injected monotonic clock."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_client_ids_are_jupyterhubs():
    assert hubenv.server_client_id("alice") == "jupyterhub-user-alice"
    assert hubenv.server_client_id("alice", "lab") == "jupyterhub-user-alice-lab"
    # Quoted as JupyterHub's user.py quotes them (the id names a cookie).
    assert hubenv.server_client_id("a b@c") == "jupyterhub-user-a%20b%40c"
    assert hubenv.service_client_id("whoami") == "service-whoami"


def test_access_scopes_and_the_server_tokens_scopes():
    assert hubenv.server_token_scopes("alice") == ("users:activity!user=alice",
                                                   "access:servers!server=alice/")
    # [roles.server] redefines them; bare filters are this server's, inherit stays.
    assert hubenv.server_token_scopes("alice", "lab", (
        "users:activity!user", "access:servers!server", "read:users:groups!user",
        "list:services", "inherit")) == (
        "users:activity!user=alice", "access:servers!server=alice/lab",
        "read:users:groups!user=alice", "list:services", "inherit")
    assert hubenv.access_scopes("alice", "lab") == ["access:servers!server=alice/lab",
                                                     "access:servers!user=alice"]
    clients = Clients()
    c = clients.register_client("service-whoami", "s3cret", "/services/whoami/oauth_callback",
                                "Service whoami")
    assert c.access_scope == "access:services!service=whoami" and c.owner is None
    s = clients.register_client("jupyterhub-user-alice", "t", "/user/alice/oauth_callback",
                                "Server at /user/alice/", server=("alice", ""))
    assert s.access_scope == "access:servers!server=alice/" and s.owner == "alice"


def test_singleuser_commands_are_recognised():
    assert hubenv.speaks_hub_oauth(("/opt/venv/bin/jupyterhub-singleuser",))
    assert hubenv.speaks_hub_oauth(("/usr/bin/python3", "-m", "jupyterhub.singleuser"))
    assert not hubenv.speaks_hub_oauth(("/usr/bin/jupyter-notebook",))
    assert not hubenv.speaks_hub_oauth(("/usr/bin/python3", "-m", "jupyter_server"))


@pytest.mark.parametrize("uri", ["/user/alice/oauth_callback", "https://x.example/cb",
                                 "http://127.0.0.1:9000/services/a/oauth_callback"])
def test_usable_redirect_uris(uri):
    oauth.check_redirect_uri(uri)


@pytest.mark.parametrize("uri", ["//evil.example/cb", "javascript:alert(1)", "cb", "",
                                 "/a#frag", "https:///nohost", "/a\\b"])
def test_unusable_redirect_uris(uri):
    with pytest.raises(ValueError):
        oauth.check_redirect_uri(uri)


def test_a_given_redirect_uri_must_be_the_clients_own():
    c = Clients().register_client("service-a", "s", "/services/a/oauth_callback", "A")
    assert oauth.redirect_target(c, None) == "/services/a/oauth_callback"
    assert oauth.redirect_target(c, "/services/a/oauth_callback") == c.redirect_uri
    with pytest.raises(OAuthError) as e:
        oauth.redirect_target(c, "/services/a/oauth_callback/../../../evil")
    assert not e.value.redirect  # never sent to an unverified URI


def test_with_query_keeps_an_existing_query():
    assert oauth.with_query("/cb", {"code": "x y", "state": "s"}) == "/cb?code=x+y&state=s"
    assert oauth.with_query("https://h/cb?a=1", {"code": "c"}) == "https://h/cb?a=1&code=c"
    assert oauth.with_query("/cb", {"state": "\udcff"}) == "/cb?state=%FF"


def test_client_authentication():
    clients = Clients()
    clients.register_client("service-a", "right", "/services/a/oauth_callback", "A")
    assert clients.authenticate("service-a", "right").client_id == "service-a"
    for client_id, secret in (("service-a", "wrong"), ("service-a", ""), ("nobody", "right")):
        with pytest.raises(OAuthError) as e:
            clients.authenticate(client_id, secret)
        assert (e.value.error, e.value.status) == ("invalid_client", 401)


def test_codes_are_single_use_and_bound_to_their_client():
    clients = Clients()
    a = clients.register_client("service-a", "sa", "/services/a/oauth_callback", "A")
    b = clients.register_client("service-b", "sb", "/services/b/oauth_callback", "B")
    code = clients.issue_code(a, "alice", frozenset({"x"}))
    with pytest.raises(OAuthError) as e:
        clients.redeem(b, code, "")
    assert e.value.error == "invalid_grant"
    # Presented by the wrong client, the code is used up all the same.
    with pytest.raises(OAuthError):
        clients.redeem(a, code, "")
    code = clients.issue_code(a, "alice", frozenset({"x"}))
    grant = clients.redeem(a, code, "/services/a/oauth_callback")
    assert (grant.user, grant.scopes) == ("alice", frozenset({"x"}))
    with pytest.raises(OAuthError) as e:
        clients.redeem(a, code, "")
    assert e.value.error == "invalid_grant"


def test_codes_expire_after_five_minutes():
    clock = Clock()
    clients = Clients(clock)
    a = clients.register_client("service-a", "sa", "/services/a/oauth_callback", "A")
    code = clients.issue_code(a, "alice", frozenset())
    clock.now += oauth.CODE_SECONDS - 1
    clients.redeem(a, code, "")
    code = clients.issue_code(a, "alice", frozenset())
    clock.now += oauth.CODE_SECONDS
    with pytest.raises(OAuthError) as e:
        clients.redeem(a, code, "")
    assert e.value.error == "invalid_grant"


def test_a_codes_redirect_uri_must_match():
    clients = Clients()
    a = clients.register_client("service-a", "sa", "/services/a/oauth_callback", "A")
    code = clients.issue_code(a, "alice", frozenset())
    with pytest.raises(OAuthError):
        clients.redeem(a, code, "/services/a/other")


def test_unregistering_a_client_drops_its_codes():
    clients = Clients()
    a = clients.register_client("service-a", "sa", "/services/a/oauth_callback", "A")
    code = clients.issue_code(a, "alice", frozenset())
    clients.unregister("service-a")
    assert clients.get("service-a") is None
    a = clients.register_client("service-a", "sa", "/services/a/oauth_callback", "A")
    with pytest.raises(OAuthError):
        clients.redeem(a, code, "")


def test_pkce_s256_and_plain():
    # RFC 7636 appendix B's example.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert oauth.pkce_challenge(verifier, "S256") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    clients = Clients()
    a = clients.register_client("service-a", "sa", "/services/a/oauth_callback", "A")
    challenge, method = oauth.check_pkce_request(oauth.pkce_challenge(verifier, "S256"), "S256")
    for presented, error in (("", "invalid_request"), ("wrong", "invalid_grant")):
        code = clients.issue_code(a, "alice", frozenset(), "", challenge, method)
        with pytest.raises(OAuthError) as e:
            clients.redeem(a, code, "", presented)
        assert e.value.error == error
    code = clients.issue_code(a, "alice", frozenset(), "", challenge, method)
    clients.redeem(a, code, "", verifier)
    assert oauth.check_pkce_request("abc", "") == ("abc", "plain")
    with pytest.raises(OAuthError):
        oauth.check_pkce_request("abc", "S512")


def roles_and_held(name: str, admin: bool = False):
    roles = Roles(defaults(), lambda _: frozenset())
    return roles, roles.scopes_of(name, roles.of_user(name, admin))


def test_a_servers_token_gets_identity_and_access_to_that_server_only():
    _, held = roles_and_held("alice")
    c = Clients().register_client("jupyterhub-user-alice", "t", "/user/alice/oauth_callback",
                                  "Server at /user/alice/", server=("alice", ""))
    granted = oauth.resolve_scopes(set(), c, "alice", held, lambda _: ())
    assert granted == {"access:servers!server=alice/", "read:users:name!user=alice",
                       "read:users:groups!user=alice"}
    # JupyterHub 3+'s scope request with the !server filter resolved for this client.
    assert oauth.resolve_scopes({"access:servers!server"}, c, "alice", held,
                                lambda _: ()) == granted


def test_requested_scopes_beyond_the_clients_are_refused_and_the_users_narrowed():
    _, held = roles_and_held("alice")
    c = Clients().register_client("service-a", "s", "/services/a/oauth_callback", "A",
                                  allowed_scopes=["read:users", "admin:users"])
    with pytest.raises(OAuthError) as e:
        oauth.resolve_scopes({"servers"}, c, "alice", held, lambda _: ())
    assert e.value.error == "invalid_scope" and e.value.redirect
    # alice may read only herself, and not administer anyone: narrowed, not refused.
    granted = oauth.resolve_scopes({"read:users", "admin:users"}, c, "alice", held,
                                   lambda _: ())
    assert "read:users!user=alice" in granted and "read:users" not in granted
    assert not any(s.startswith("admin:users") for s in granted)
    assert "access:services!service=a" in granted


def test_scope_parameter_identify_roles_and_unknown_names():
    roles, _ = roles_and_held("alice")
    assert oauth.requested_scopes("identify", roles.definitions) == set()
    assert oauth.requested_scopes("read:users:name read:users:groups",
                                  roles.definitions) == {"read:users:name", "read:users:groups"}
    assert oauth.requested_scopes("server", roles.definitions) == set(
        scopes.DEFAULT_ROLES["server"])
    with pytest.raises(OAuthError) as e:
        oauth.requested_scopes("read:everything", roles.definitions)
    assert e.value.error == "invalid_scope"


def test_inherit_only_for_a_client_allowed_it():
    _, held = roles_and_held("alice")
    plain = Clients().register_client("service-a", "s", "/services/a/oauth_callback", "A")
    with pytest.raises(OAuthError):
        oauth.resolve_scopes({"inherit"}, plain, "alice", held, lambda _: ())
    wide = Clients().register_client("service-b", "s", "/services/b/oauth_callback", "B",
                                     allowed_scopes=["inherit"])
    assert "inherit" in oauth.resolve_scopes({"inherit"}, wide, "alice", held, lambda _: ())


def test_confirmation_rules():
    clients = Clients()
    own = clients.register_client("jupyterhub-user-alice", "t", "/user/alice/oauth_callback",
                                  "Server at /user/alice/", server=("alice", ""))
    service = clients.register_client("service-a", "s", "/services/a/oauth_callback", "A")
    trusted = clients.register_client("service-b", "s", "/services/b/oauth_callback", "B",
                                      no_confirm=True)
    few, more = frozenset({"x"}), frozenset({"x", "y"})
    assert not oauth.needs_confirmation(own, "alice", more, [])
    assert oauth.needs_confirmation(own, "admin", more, [])  # someone else's server
    assert oauth.needs_confirmation(service, "alice", few, [])
    assert not oauth.needs_confirmation(service, "alice", few, [more])  # granted before
    assert oauth.needs_confirmation(service, "alice", more, [few])  # asks for more now
    assert not oauth.needs_confirmation(trusted, "alice", more, [])


def test_the_confirmation_page_describes_what_is_beyond_identity_and_access():
    c = Clients().register_client("service-a", "s", "/services/a/oauth_callback", "A")
    base = scopes.identify_scopes("alice") | {c.access_scope}
    assert [d["description"] for d in oauth.describe(base, c, "alice")] == [
        scopes.SCOPES["(no_scope)"][0]]
    described = oauth.describe(base | {"read:users:activity!user=alice"}, c, "alice")
    assert described == [{"scope": "read:users:activity!user=alice", "filter": "only you",
                          "description": scopes.SCOPES["read:users:activity"][0]}]


def test_the_hub_url_servers_reach():
    assert hubenv.hub_url("0.0.0.0", 8000, False) == "http://127.0.0.1:8000"
    assert hubenv.hub_url("::", 8000, True) == "https://[::1]:8000"
    assert hubenv.hub_url("10.0.0.5", 8000, False) == "http://10.0.0.5:8000"
    assert hubenv.hub_url("fd00::5", 80, False) == "http://[fd00::5]:80"
