"""Who may act on whose servers: the one owner-or-admin rule, written once.

The API, the pages and the proxy all ask here, so a later rule (admin_access, scopes) changes
in one place.
"""

from appliance.errors import Forbidden
from appliance.identity import Identity


def may_act_on(identity: Identity, user: str) -> bool:
    """True if identity may start, stop, watch or open user's servers: the user, or an admin."""
    return identity.name == user or identity.admin


def may_open(identity: Identity, user: str, admin_access: bool) -> bool:
    """True if identity may open (use) user's server: the user, or an admin when
    auth.admin_access is on. Starting and stopping it is may_act_on's rule."""
    return identity.name == user or (identity.admin and admin_access)


def check_open(identity: Identity, user: str, admin_access: bool) -> None:
    """Forbidden unless identity may open user's server; an admin is told why not."""
    if may_open(identity, user, admin_access):
        return
    if identity.admin:
        raise Forbidden(f"admin {identity.name} may not open {user}'s server "
                        "(auth.admin_access is off)",
                        user_message=f"As an administrator you may start and stop {user}'s "
                                     "server, but not open it: auth.admin_access is off in "
                                     "this hub's configuration.")
    raise Forbidden(f"{identity.name} may not open {user}'s server",
                    user_message="This is not your server.")


def check(identity: Identity, user: str, user_message: str) -> None:
    """Forbidden (with user_message for the browser) unless identity may act on user."""
    if not may_act_on(identity, user):
        raise Forbidden(f"{identity.name} may not act on {user}", user_message=user_message)
