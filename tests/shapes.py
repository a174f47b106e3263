"""JSON shapes: the keys and JSON types of a response, and the differences between two.

Used to hold our REST API against a real JupyterHub's (tests/integration/
test_jupyterhub_shapes.py). A shape is what a client can rely on: for an object, its keys
and each key's shape; for an array, the merged shape of its items; for a scalar, its JSON
type. Values are not part of a shape, except for the keys in SAME_VALUE, which the two hubs
must agree on when their state is the same (a user's name, whether a server is ready).
Stdlib only: the unit tier tests it on any host.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

#: Objects whose keys are names, not fields (a user's servers by server name, the proxy's
#: routes by path, the services by name): their values are merged into one shape under "*".
MAPS = frozenset({"servers"})
#: Objects JupyterHub documents as free-form (`properties: {}` in its rest-api.yml: the
#: spawner's user_options and state, a group's properties, a service's info, auth_state,
#: user_info): only "object" is compared, not their keys.
FREE_FORM = frozenset({"user_options", "state", "properties", "info", "auth_state",
                       "user_info"})
#: Where null matches any type. last_activity: JupyterHub documents it as null until
#: something happens ("Can be null if token has never been used"), and the two hubs record
#: activity at different moments (JupyterHub's activity_resolution, last_activity_interval).
#: message: an error's text; JupyterHub 6.1.1 sends null for an unknown route or a wrong
#: method (its write_error takes the reason of a bare HTTPError, which has none) and a
#: string for its other errors, so a string there is as good. user_options: documented as
#: an object; JupyterHub 6.1.1 sends null for a stopped server started without options
#: (the database's empty column) and {} for the same server running.
NULL_MATCHES = frozenset({"last_activity", "message", "user_options"})
#: Fields of ours that JupyterHub does not have, each on purpose; JupyterHub's clients ignore
#: fields they do not know. appliance: our version beside JupyterHub's API level (/hub/api/,
#: /info). memory, memory_limit, cpu_percent: a server's live figures from its cgroup (the
#: console, issue 7). stopped_reason, notice: why a server stopped and what happened to it,
#: in words (the home page says them too).
OUR_EXTRAS = frozenset({"appliance", "memory", "memory_limit", "cpu_percent", "stopped_reason",
                        "notice"})
#: Fields whose values are fixed by the state both hubs were given (the same users, the same
#: server running, the same group) or by JupyterHub's documentation (kind, a token's
#: always-empty roles, an error's status); lists among them are compared sorted.
SAME_VALUE = frozenset({"kind", "name", "admin", "server", "pending", "ready", "stopped",
                        "url", "progress_url", "groups", "users", "roles", "user",
                        "session_id", "status", "offset", "limit", "total"})


@dataclass
class Shape:
    """The JSON types seen at one place, with the keys of its objects and its arrays' items."""

    types: set[str] = field(default_factory=set)
    keys: dict[str, Shape] = field(default_factory=dict)
    #: The merged shape of the items of its arrays; None while every array seen was empty.
    items: Shape | None = None

    def merge(self, other: Shape) -> Shape:
        """A shape that admits both (as for two items of one array)."""
        keys = dict(self.keys)
        for key, shape in other.keys.items():
            keys[key] = keys[key].merge(shape) if key in keys else shape
        if self.items is None or other.items is None:
            items = self.items or other.items
        else:
            items = self.items.merge(other.items)
        return Shape(self.types | other.types, keys, items)

    def describe(self) -> str:
        """A short text: 'string', 'null|string', 'object{a, b}', 'array of string'."""
        parts = []
        for t in sorted(self.types):
            if t == "object" and self.keys:
                parts.append("object{" + ", ".join(sorted(self.keys)) + "}")
            elif t == "array":
                parts.append("array of " + (self.items.describe() if self.items else
                                            "nothing (empty)"))
            else:
                parts.append(t)
        return "|".join(parts) or "nothing"


def json_type(value) -> str:
    """The JSON Schema type name of a decoded JSON value (integer and number apart)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    raise TypeError(f"not a decoded JSON value: {value!r}")


def shape_of(value, maps: Iterable[str] = (), key: str = "") -> Shape:
    """The shape of a decoded JSON value. `maps` names further keys whose objects are maps
    (beside MAPS); "" makes the top-level object a map (GET /proxy, GET /services)."""
    maps = frozenset(maps)
    t = json_type(value)
    shape = Shape({t})
    if t == "array":
        for item in value:
            one = shape_of(item, maps - {""}, key)
            shape.items = one if shape.items is None else shape.items.merge(one)
    elif t == "object" and key in FREE_FORM:
        pass
    elif t == "object" and (key in MAPS or key in maps):
        for item in value.values():
            one = shape_of(item, maps - {""}, "*")
            shape.keys["*"] = shape.keys["*"].merge(one) if "*" in shape.keys else one
    elif t == "object":
        shape.keys = {k: shape_of(v, maps - {""}, k) for k, v in value.items()}
    return shape


def shape_diffs(ours: Shape, theirs: Shape, path: str = "") -> list[str]:
    """Where our shape differs from JupyterHub's, one readable line each."""
    diffs = []
    key = _last_key(path)
    want, got = theirs.types, ours.types
    if key in NULL_MATCHES:
        want, got = want - {"null"}, got - {"null"}
    if want and got and want != got:
        diffs.append(f"type     {path or '(body)'}: JupyterHub {theirs.describe()}, "
                     f"ours {ours.describe()}")
    if "object" in theirs.types and "object" in ours.types:
        for k in sorted(theirs.keys.keys() - ours.keys.keys()):
            what = "empty   " if k == "*" else "missing "  # "*": a map's entries
            diffs.append(f"{what} {_join(path, k)} (JupyterHub: {theirs.keys[k].describe()})")
        for k in sorted(ours.keys.keys() - theirs.keys.keys() - OUR_EXTRAS):
            what = "nonempty" if k == "*" else "extra   "
            diffs.append(f"{what} {_join(path, k)} (ours: {ours.keys[k].describe()})")
        for k in sorted(theirs.keys.keys() & ours.keys.keys()):
            diffs += shape_diffs(ours.keys[k], theirs.keys[k], _join(path, k))
    if "array" in theirs.types and "array" in ours.types:
        if theirs.items is not None and ours.items is not None:
            diffs += shape_diffs(ours.items, theirs.items, path + "[]")
        elif theirs.items is not None:
            diffs.append(f"empty    {path}[]: ours is empty, JupyterHub has "
                         f"{theirs.items.describe()}")
        elif ours.items is not None:
            diffs.append(f"nonempty {path}[]: JupyterHub's is empty, ours has "
                         f"{ours.items.describe()}")
    return diffs


def outline(shape: Shape, path: str = "") -> list[str]:
    """Every place in a shape with its types, one line each ("servers.*.ready: boolean"):
    what a client may rely on, to show where ours has nothing comparable."""
    kinds = "|".join(sorted(shape.types)) or "nothing"
    lines = [f"{path or '(body)'}: {kinds}"]
    for key in sorted(shape.keys):
        lines += outline(shape.keys[key], _join(path, key))
    if shape.items is not None:
        lines += outline(shape.items, path + "[]")
    return lines


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def value_diffs(ours, theirs, maps: Iterable[str] = (), path: str = "") -> list[str]:
    """Where the two disagree on a SAME_VALUE field, or on a map's keys (which servers,
    routes or services there are), for the objects both have."""
    maps = frozenset(maps)
    diffs = []
    if isinstance(ours, dict) and isinstance(theirs, dict):
        key = _last_key(path)
        is_map = key in MAPS or key in maps or (path == "" and "" in maps)
        if is_map and ours.keys() != theirs.keys():
            diffs.append(f"keys     {path or '(body)'}: JupyterHub {sorted(theirs)}, "
                         f"ours {sorted(ours)}")
        if key in FREE_FORM:
            return diffs
        for k in sorted(ours.keys() & theirs.keys()):
            sub = _join(path, "*" if is_map else k)
            if not is_map and k in SAME_VALUE and _canonical(ours[k]) != _canonical(theirs[k]):
                diffs.append(f"value    {sub}: JupyterHub {theirs[k]!r}, ours {ours[k]!r}")
            diffs += value_diffs(ours[k], theirs[k], maps - {""}, sub)
    elif isinstance(ours, list) and isinstance(theirs, list):
        if _named(ours + theirs):
            names, their_names = [x["name"] for x in ours], [x["name"] for x in theirs]
            if sorted(names) != sorted(their_names):
                diffs.append(f"names    {path}[]: JupyterHub {sorted(their_names)}, "
                             f"ours {sorted(names)}")
            by_name = {x["name"]: x for x in theirs}
            pairs = [(x, by_name[x["name"]], x["name"]) for x in ours if x["name"] in by_name]
        else:
            pairs = [(a, b, i) for i, (a, b) in enumerate(zip(ours, theirs, strict=False))]
        for a, b, label in pairs:
            diffs += value_diffs(a, b, maps - {""}, f"{path}[{label}]")
    return diffs


def _canonical(value):
    """Lists compared as sorted (role and group names come in no documented order); an
    absolute URL (pagination's `next.url`) as its path and sorted query: each hub has its
    own host and port."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return sorted(value)
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        url = urlsplit(value)
        return url.path, sorted(parse_qsl(url.query, keep_blank_values=True))
    return value


def _named(items: list) -> bool:
    """Whether an array holds named objects (users, groups), paired by name, not position."""
    return bool(items) and all(isinstance(x, dict) and "name" in x for x in items)


def _last_key(path: str) -> str:
    """The key a path ends in: "items[alice].servers" -> "servers", "[0]" -> ""."""
    return re.sub(r"\[[^]]*\]$", "", path).rsplit(".", 1)[-1]
