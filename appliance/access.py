"""Who may do what: every check of a request against its scopes, written once.

The API, the pages and the proxy all ask here. A user's own things come from the `user`
role (`self`), everyone's from `admin` (auth.admin_users, auth.admin_group), others from
[roles.*]; a token holds what it was made with, as far as its owner does (roles.py). Opening
someone else's server needs access:servers, which the admin role has only with
auth.admin_access.
"""

from appliance import scopes
from appliance.errors import Forbidden, NotFound
from appliance.events import Cause
from appliance.identity import Identity


def _no_groups(_: str) -> frozenset[str]:
    return frozenset()


def allows(identity: Identity, scope: str, *, user: str | None = None,
           server: str | None = None, group: str | None = None, service: str | None = None,
           groups_of: scopes.GroupsOf = _no_groups) -> bool:
    """Whether identity holds scope on this user, server ("user/name"), group or service,
    or on everything when none is named."""
    kind, value = _resource(user, server, group, service)
    return scopes.allows(identity.parsed, scope, kind, value or "", groups_of)


def _resource(user, server, group, service=None) -> tuple[str | None, str | None]:
    if service is not None:
        return "service", service
    if server is not None:
        return "server", server
    if user is not None:
        return "user", user
    if group is not None:
        return "group", group
    return None, None


def require(identity: Identity, *needed: str, user: str | None = None,
            server: str | None = None, group: str | None = None, service: str | None = None,
            groups_of: scopes.GroupsOf = _no_groups) -> None:
    """Pass if identity holds any of the needed scopes on the resource; otherwise JupyterHub's
    refusal: 404 when it holds them for other resources only, else 403 naming them."""
    kind, value = _resource(user, server, group, service)
    if any(scopes.allows(identity.parsed, s, kind, value or "", groups_of) for s in needed):
        return
    denied = scopes.denial(identity.parsed, needed, filtered=kind is not None)
    log = (f"{identity.name} ({identity.via}) lacks any of {list(needed)} on "
           f"{kind or '*'}={value or '*'}")
    if denied.status == 404:
        raise NotFound(log, user_message=denied.message)
    raise Forbidden(log, user_message=denied.message)


def require_some(identity: Identity, scope: str) -> None:
    """Pass if identity holds scope on anything (a list endpoint then shows only what it
    covers: JupyterHub's post_filter); JupyterHub's 403 otherwise."""
    if not scopes.allows_some(identity.parsed, scope):
        raise Forbidden(f"{identity.name} ({identity.via}) lacks {scope}",
                        user_message=scopes.denial(identity.parsed, (scope,), False).message)


def may_act_on(identity: Identity, user: str) -> bool:
    """True if identity may start, stop and watch user's servers (the servers scope)."""
    return allows(identity, "servers", user=user)


def may_open(identity: Identity, user: str, server: str = "") -> bool:
    """True if identity may open (use) user's server: access:servers on it, which a user
    has on their own and an admin on everyone's only with auth.admin_access (roles.py)."""
    return allows(identity, "access:servers", server=f"{user}/{server}")


def check_open(identity: Identity, user: str, admin_access: bool, server: str = "") -> None:
    """Forbidden unless identity may open user's server; an admin is told why not."""
    if may_open(identity, user, server):
        return
    if identity.admin and not admin_access:
        raise Forbidden(f"admin {identity.name} may not open {user}'s server "
                        "(auth.admin_access is off)",
                        user_message=f"As an administrator you may start and stop {user}'s "
                                     "server, but not open it: auth.admin_access is off in "
                                     "this hub's configuration.")
    if identity.via == "token":  # a tool is told the scope it lacks, in JupyterHub's words
        raise Forbidden(f"{identity.name}'s token lacks access:servers on {user}/{server}",
                        user_message=scopes.denial({}, ("access:servers",), False).message)
    raise Forbidden(f"{identity.name} may not open {user}'s server",
                    user_message="This is not your server.")


def check(identity: Identity, user: str, user_message: str) -> None:
    """Forbidden (with user_message for the browser) unless identity may act on user."""
    if not may_act_on(identity, user):
        raise Forbidden(f"{identity.name} may not act on {user}", user_message=user_message)


def stop_cause(identity: Identity, user: str) -> Cause:
    """Who stopped user's server, as usage history records it: the user, or an admin."""
    return Cause.USER if identity.is_user(user) else Cause.ADMIN
