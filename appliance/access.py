"""Who may act on whose servers: the one owner-or-admin rule, written once.

The API, the pages and the proxy all ask here, so a later rule (admin_access, scopes) changes
in one place.
"""

from appliance.errors import Forbidden
from appliance.identity import Identity


def may_act_on(identity: Identity, user: str) -> bool:
    """True if identity may start, stop, watch or open user's servers: the user, or an admin."""
    return identity.name == user or identity.admin


def check(identity: Identity, user: str, user_message: str) -> None:
    """Forbidden (with user_message for the browser) unless identity may act on user."""
    if not may_act_on(identity, user):
        raise Forbidden(f"{identity.name} may not act on {user}", user_message=user_message)
