"""What every API module shares: who is calling (with the CSRF check for cookies), the
owner-or-admin gate, JupyterHub's timestamps and the JSON body reader.

Errors are raised as typed exceptions; app.py's error_middleware turns them into
JupyterHub's JSON error bodies.
"""

from datetime import datetime, timezone

from aiohttp import web

from appliance import access
from appliance.errors import BadRequest, NotAuthenticated
from appliance.identity import Identity


def isoformat(ts: float | None) -> str | None:
    """JupyterHub's timestamps: ISO 8601 in UTC with a Z."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


async def require_identity(request: web.Request) -> Identity:
    """The caller; cookie callers must also pass the CSRF check on writes."""
    identity = await request.app["identities"].of_request(request)
    if identity is None:
        raise NotAuthenticated("no valid token or session", user_message="Authentication "
                               "required: send 'Authorization: token <your API token>'.")
    if identity.via == "cookie" and request.method not in ("GET", "HEAD"):
        request.app["identities"].check_xsrf(request, request.headers.get("X-XSRFToken"))
    return identity


async def require_access(request: web.Request) -> tuple[Identity, str]:
    """The caller and the user named in the URL; only that user or an admin may go on."""
    identity = await require_identity(request)
    name = request.match_info["name"]
    access.check(identity, name, f"You may not act on {name}.")
    return identity, name


async def json_object(request: web.Request, what: str, example: str) -> dict:
    """The request body as a JSON object ({} when there is none); a 400 that shows an
    example otherwise."""
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise BadRequest(f"{what} is not a JSON object",
                         user_message=f"Send {what} as a JSON object, like {example}.")
    return body
