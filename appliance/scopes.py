"""JupyterHub's scopes and roles, as plain data and pure functions (no I/O).

A scope names a permission ("read:users"), optionally narrowed by a filter to one user, group
or server ("read:users!user=alice", "servers!group=course", "access:servers!server=bob/lab").
Some scopes imply others (subscopes); a role is a named list of scopes. The names, the
implications and the refusal messages are JupyterHub 5's (jupyterhub/scopes.py and roles.py),
so tokens made for JupyterHub tools mean the same here. access.py is where requests are
checked against them.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass

#: Every scope JupyterHub 5 defines: its description and the scopes it implies.
SCOPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "(no_scope)": ("Identify the owner of the requesting entity.", ()),
    "self": ("Your own resources", ()),
    "inherit": ("Anything you have access to", ()),
    "admin-ui": ("Access the admin page.", ()),
    "admin:users": ("Read, modify, create, and delete users and their authentication state, "
                    "not including their servers or tokens.",
                    ("admin:auth_state", "users", "read:roles:users", "delete:users")),
    "admin:auth_state": ("Read a user's authentication state.", ()),
    "users": ("Read and write permissions to user models (excluding servers, tokens and "
              "authentication state).", ("read:users", "list:users", "users:activity")),
    "delete:users": ("Delete users.", ()),
    "list:users": ("List users, including at least their names.", ("read:users:name",)),
    "read:users": ("Read user models (including the URL of the default server if it is "
                   "running).", ("read:users:name", "read:users:groups",
                                 "read:users:activity")),
    "read:users:name": ("Read names of users.", ()),
    "read:users:groups": ("Read users' group membership.", ()),
    "read:users:activity": ("Read time of last user activity.", ()),
    "read:roles": ("Read role assignments.",
                   ("read:roles:users", "read:roles:services", "read:roles:groups")),
    "read:roles:users": ("Read user role assignments.", ()),
    "read:roles:services": ("Read service role assignments.", ()),
    "read:roles:groups": ("Read group role assignments.", ()),
    "users:activity": ("Update time of last user activity.", ("read:users:activity",)),
    "admin:servers": ("Read, start, stop, create and delete user servers and their state.",
                      ("admin:server_state", "servers")),
    "admin:server_state": ("Read and write users' server state.", ()),
    "servers": ("Start and stop user servers.", ("read:servers", "delete:servers")),
    "read:servers": ("Read users' names and their server models (excluding the server "
                     "state).", ("read:users:name",)),
    "delete:servers": ("Stop and delete users' servers.", ()),
    "tokens": ("Read, write, create and delete user tokens.", ("read:tokens",)),
    "read:tokens": ("Read user tokens.", ()),
    "admin:groups": ("Read and write group information, create and delete groups.",
                     ("groups", "read:roles:groups", "delete:groups")),
    "groups": ("Read and write group information, including adding/removing any users "
               "to/from groups.", ("read:groups", "list:groups")),
    "list:groups": ("List groups, including at least their names.", ("read:groups:name",)),
    "read:groups": ("Read group models.", ("read:groups:name",)),
    "read:groups:name": ("Read group names.", ()),
    "delete:groups": ("Delete groups.", ()),
    "admin:services": ("Create, read, update, delete services, not including services "
                       "defined from config files.",
                       ("list:services", "read:services", "read:roles:services")),
    "list:services": ("List services, including at least their names.",
                      ("read:services:name",)),
    "read:services": ("Read service models.", ("read:services:name",)),
    "read:services:name": ("Read service names.", ()),
    "read:hub": ("Read detailed information about the Hub.", ()),
    "access:servers": ("Access user servers via API or browser.", ()),
    "access:services": ("Access services via API or browser.", ()),
    "users:shares": ("Read and revoke a user's access to shared servers.",
                     ("read:users:shares",)),
    "read:users:shares": ("Read servers shared with a user.", ()),
    "groups:shares": ("Read and revoke a group's access to shared servers.",
                      ("read:groups:shares",)),
    "read:groups:shares": ("Read servers shared with a group.", ()),
    "read:shares": ("Read information about shared access to servers.", ()),
    "shares": ("Manage access to shared servers.",
               ("access:servers", "read:shares", "users:shares", "groups:shares")),
    "proxy": ("Read information about the proxy's routing table, sync the Hub with the proxy "
              "and notify the Hub about a new proxy.", ()),
    "shutdown": ("Shutdown the hub.", ()),
    "read:metrics": ("Read prometheus metrics.", ()),
}

#: What a user's own `self` stands for (JupyterHub's _expand_self_scope), each !user=<them>.
SELF_SCOPES = ("read:users", "users:shares", "read:shares", "users:activity", "servers",
               "tokens", "access:servers")

#: JupyterHub's default roles. roles.Roles takes access:servers out of `admin` unless
#: auth.admin_access is on: opening a student's server is the one thing an admin may not do
#: by default in this hub, as in JupyterHub before roles.
DEFAULT_ROLES: dict[str, tuple[str, ...]] = {
    "user": ("self",),
    "admin": ("admin-ui", "admin:users", "admin:servers", "admin:services", "tokens",
              "admin:groups", "list:services", "read:services", "read:hub", "proxy",
              "shutdown", "access:services", "access:servers", "read:roles", "read:metrics",
              "shares"),
    "server": ("users:activity!user", "access:servers!server"),
    "token": ("inherit",),
}

_FILTER_KINDS = ("user", "group", "server", "service")


class ScopeNotFound(ValueError):
    """A scope or filter that JupyterHub does not define (its message, word for word)."""


#: A parsed scope set: base scope -> ALL, or kind ("user", "group", ...) -> names.
ALL = "*"
Parsed = dict[str, "str | dict[str, set[str]]"]


def check_exist(scopes: Iterable[str], who_for: str = "") -> None:
    """ScopeNotFound for the first scope or filter that does not exist."""
    log_for = f"for {who_for}" if who_for else ""
    for scope in scopes:
        if not isinstance(scope, str):
            raise ScopeNotFound(f"Scope {scope!r} {log_for} does not exist")
        name, _, filter_ = scope.partition("!")
        if name not in SCOPES:
            if name == "all":
                raise ScopeNotFound("Draft scope 'all' is now called 'inherit'")
            raise ScopeNotFound(f"Scope '{scope}' {log_for} does not exist")
        if filter_:
            kind, eq, value = filter_.partition("=")
            if kind not in _FILTER_KINDS or (eq and not value) or (
                    not eq and kind == "group"):
                raise ScopeNotFound(f"Scope filter {filter_} '!{filter_}' in scope '{scope}' "
                                    f"{log_for} does not exist")


def _subscopes(name: str) -> set[str]:
    """name and everything it implies."""
    found = {name}
    for sub in SCOPES[name][1]:
        found |= _subscopes(sub)
    return found


def expand(scopes: Iterable[str], owner: str | None = None,
           server: str | None = None, service: str | None = None) -> frozenset[str]:
    """Every scope the raw scopes imply, with `self` and bare `!user`/`!server`/`!service`
    filters resolved for owner (and owner's server "user/name", or the owning service);
    `inherit` is left for the caller (it means "the owner's scopes", which only the caller
    knows). A service's `self` is nothing (JupyterHub: "resolves to (no_scope)")."""
    out: set[str] = set()
    for scope in scopes:
        name, _, filter_ = scope.partition("!")
        if name == "self":
            if owner is not None:
                out |= {f"{s}!user={owner}" for base in SELF_SCOPES for s in _subscopes(base)}
            continue
        if name == "inherit":
            out.add("inherit")
            continue
        if filter_ == "user":
            if owner is None:
                continue
            filter_ = f"user={owner}"
        elif filter_ == "server":
            if server is None:
                continue
            filter_ = f"server={server}"
        elif filter_ == "service":
            if service is None:
                continue
            filter_ = f"service={service}"
        for sub in _subscopes(name):
            # read:servers!server=x implies reading the user's name, not the whole user.
            if filter_.startswith("server=") and sub.startswith("read:users"):
                continue
            out.add(f"{sub}!{filter_}" if filter_ else sub)
    return reduce(out)


def parse(expanded: Iterable[str]) -> Parsed:
    """{"read:users": ALL, "servers": {"user": {"alice"}}, ...}."""
    parsed: Parsed = {}
    for scope in expanded:
        base, _, filter_ = scope.partition("!")
        if not filter_:
            parsed[base] = ALL
            continue
        have = parsed.setdefault(base, {})
        if have is ALL:
            continue
        kind, _, value = filter_.partition("=")
        have.setdefault(kind, set()).add(value)
    return parsed


def unparse(parsed: Parsed) -> frozenset[str]:
    """The scope strings of a parsed set."""
    out = set()
    for base, filters in parsed.items():
        if filters is ALL:
            out.add(base)
        else:
            out |= {f"{base}!{kind}={v}" for kind, values in filters.items() for v in values}
    return frozenset(out)


def reduce(expanded: Iterable[str]) -> frozenset[str]:
    """Drop filtered scopes an unfiltered one already covers."""
    return unparse(parse(expanded))


#: Who is in which groups: user name -> group names (hub groups, mirrored unix groups).
GroupsOf = Callable[[str], Iterable[str]]


def _no_groups(_: str) -> frozenset[str]:
    return frozenset()


def allows(parsed: Parsed, base: str, kind: str | None = None, value: str = "",
           groups_of: GroupsOf = _no_groups) -> bool:
    """Whether the parsed scopes grant base on this resource (kind=value: "user"="alice",
    "server"="alice/" or "alice/lab", "group"="course"); without kind, only unfiltered
    access counts. A user's scope covers their servers; a group's covers its members."""
    have = parsed.get(base)
    if have is None:
        return False
    if have is ALL:
        return True
    if kind is None:
        return False
    if value in have.get(kind, ()):
        return True
    user = value.partition("/")[0] if kind == "server" else value if kind == "user" else None
    if user is None:
        return False
    if kind == "server" and user in have.get("user", ()):
        return True
    return bool(have.get("group") and set(groups_of(user)) & have["group"])


def allows_some(parsed: Parsed, base: str) -> bool:
    """Whether base is granted on anything (a list is then narrowed item by item)."""
    return base in parsed


def intersect(a: frozenset[str], b: frozenset[str],
              groups_of: GroupsOf = _no_groups) -> frozenset[str]:
    """The scopes both sets grant (a token's scopes within its owner's): for each scope both
    have, the narrower side's filters where the other side covers them."""
    pa, pb = parse(a), parse(b)
    out: set[str] = set()
    for base in pa.keys() & pb.keys():
        fa, fb = pa[base], pb[base]
        if fa is ALL or fb is ALL:
            out |= unparse({base: fb if fa is ALL else fa})
            continue
        for mine, other in ((fa, pb), (fb, pa)):
            for kind, values in mine.items():
                out |= {f"{base}!{kind}={v}" for v in values
                        if allows(other, base, kind, v, groups_of)}
    return reduce(out)


def identify_scopes(name: str) -> frozenset[str]:
    """What every credential may read about its own owner (GET /hub/api/user)."""
    return frozenset({f"read:users:name!user={name}", f"read:users:groups!user={name}"})


def identify_service_scopes(name: str) -> frozenset[str]:
    """What a service's credential may read about the service itself (GET /hub/api/user)."""
    return frozenset({f"read:services:name!service={name}"})


@dataclass(frozen=True)
class Denied:
    """Why a check failed: JupyterHub's status and message."""

    status: int
    message: str


def denial(parsed: Parsed, needed: tuple[str, ...], filtered: bool) -> Denied:
    """JupyterHub's refusal (needs_scope): a 404 when the caller holds one of the scopes for
    other resources only (no sign whether this one exists), else a 403 naming the scopes."""
    if filtered and any(s in parsed for s in needed):
        return Denied(404, "No access to resources or resources not found")
    return Denied(403, "Action is not authorized with current scopes; requires any of "
                       f"[{', '.join(needed)}]")
