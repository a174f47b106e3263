"""What every API module shares: who is calling (with the CSRF check for cookies), the scope
check (access.require), JupyterHub's timestamps, pagination and the JSON body reader.

Errors are raised as typed exceptions; app.py's error_middleware turns them into
JupyterHub's JSON error bodies.
"""

from datetime import datetime, timezone
from urllib.parse import urlencode

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


async def authorize(request: web.Request, *needed: str, user: str | None = None,
                    server: str | None = None, group: str | None = None,
                    service: str | None = None) -> Identity:
    """The caller, if they hold one of the needed scopes on the resource named (JupyterHub's
    needs_scope); its refusal otherwise."""
    identity = await require_identity(request)
    access.require(identity, *needed, user=user, server=server, group=group, service=service,
                   groups_of=request.app["groups"].of_user)
    return identity


async def authorize_listing(request: web.Request, scope: str) -> Identity:
    """The caller, if they may list some of a resource (list:users, list:groups)."""
    identity = await require_identity(request)
    access.require_some(identity, scope)
    return identity


async def authorize_user(request: web.Request, *needed: str) -> tuple[Identity, str]:
    """The caller and the user named in the URL, if the caller holds a needed scope on them."""
    name = request.match_info["name"]
    return await authorize(request, *needed, user=name), name


#: The media type a client sends in Accept to get pages with their envelope (JupyterHub's).
PAGINATION_MEDIA_TYPE = "application/jupyterhub-pagination+json"
#: JupyterHub's api_page_default_limit and api_page_max_limit.
PAGE_DEFAULT, PAGE_MAX = 50, 200


def accepts_pagination(request: web.Request) -> bool:
    """Whether the client asked for JupyterHub's pagination envelope."""
    accept = request.headers.get("Accept", "")
    return PAGINATION_MEDIA_TYPE in {s.strip().lower() for s in accept.split(",")}


def pagination(request: web.Request) -> tuple[int, int]:
    """?offset= and ?limit= as JupyterHub reads them (a limit is 1 to PAGE_MAX; without the
    envelope the default is PAGE_MAX, so old clients miss nobody)."""
    default = PAGE_DEFAULT if accepts_pagination(request) else PAGE_MAX
    try:
        offset = abs(int(request.query.get("offset", 0)))
        limit = abs(int(request.query.get("limit", default)))
    except ValueError:
        raise BadRequest("bad offset or limit", user_message="Invalid argument type, offset "
                         "and limit must be integers") from None
    return offset, min(max(limit, 1), PAGE_MAX)


def paginated(request: web.Request, items, offset: int, limit: int, total: int):
    """items as the client asked: JupyterHub's envelope (items, _pagination with the next
    page's URL) when it sent the media type, else the items alone."""
    if not accepts_pagination(request):
        return items
    following = None
    if offset + limit < total:
        query = {**request.query, "offset": str(offset + limit), "limit": str(limit)}
        following = {"offset": offset + limit, "limit": limit,
                     "url": str(request.url.with_query(None)) + "?" + urlencode(query)}
    return {"items": items, "_pagination": {"offset": offset, "limit": limit, "total": total,
                                             "next": following}}


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
