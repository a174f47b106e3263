"""Who holds which roles, and so which scopes: JupyterHub's default roles and [roles.*].

Every user has the `user` role (their own things); administrators (auth.admin_users,
auth.admin_group) have `admin`, which opens other users' servers (access:servers) only when
auth.admin_access is on; a [roles.<name>] table gives its scopes to the users it lists, to
the members of the hub groups it lists and to the services it lists; a service also has the
roles and scopes of its own [services.<name>] table. A token has the scopes it was made with,
as far as its owner holds them.
"""

from collections.abc import Iterable

from appliance import scopes
from appliance.config import Config

#: What the admin role loses while auth.admin_access is off: opening users' servers.
_OPENING = frozenset({"access:servers", "shares"})


class Roles:
    """Resolves users' roles and scopes for one configuration."""

    def __init__(self, cfg: Config, groups_of: scopes.GroupsOf):
        self.cfg = cfg
        self.groups_of = groups_of
        admin = scopes.DEFAULT_ROLES["admin"]
        if not cfg.auth.admin_access:
            admin = tuple(s for s in admin if s not in _OPENING)
        self.definitions = {**scopes.DEFAULT_ROLES, "admin": admin,
                            **{name: role.scopes for name, role in cfg.roles}}

    def direct(self, name: str, admin: bool) -> list[str]:
        """The roles given to name itself (JupyterHub's user model `roles`)."""
        own = ["user"] + (["admin"] if admin else [])
        return own + [role for role, cfg in self.cfg.roles if name in cfg.users]

    def of_user(self, name: str, admin: bool) -> list[str]:
        """Every role name holds: their own and their groups'."""
        groups = self.groups_of(name)
        return self.direct(name, admin) + [
            role for role, cfg in self.cfg.roles
            if name not in cfg.users and groups & set(cfg.groups)]

    def scopes_of(self, name: str, roles: Iterable[str]) -> frozenset[str]:
        """The expanded scopes these roles give name."""
        raw = [s for role in roles for s in self.definitions[role]]
        return scopes.expand(raw, owner=name)

    def token_scopes(self, name: str, owner_scopes: frozenset[str],
                     token_scopes: Iterable[str]) -> frozenset[str]:
        """What a token of name's may do: its scopes as far as name holds them, and always
        name's identity (JupyterHub's get_scopes_for an APIToken)."""
        token_scopes = set(token_scopes)
        if "inherit" in token_scopes:
            return owner_scopes
        held = scopes.intersect(scopes.expand(token_scopes, owner=name), owner_scopes,
                                self.groups_of)
        return scopes.reduce(held | scopes.identify_scopes(name))

    def of_service(self, name: str) -> list[str]:
        """The roles a [services.<name>] has: its own roles key, then the roles that list it."""
        own = list(dict(self.cfg.services)[name].roles)
        return own + [role for role, cfg in self.cfg.roles
                      if name in cfg.services and role not in own]

    def service_scopes(self, name: str, roles: Iterable[str]) -> frozenset[str]:
        """What a service's token may do: its roles' scopes and its own scopes key (JupyterHub
        gives a service no `self`). Reading its own name is added where it is asked (GET
        /user), as JupyterHub adds it: a service without roles reports no scopes."""
        raw = [s for role in roles for s in self.definitions[role]]
        raw += dict(self.cfg.services)[name].scopes
        return scopes.expand(raw, service=name)

    def excess(self, name: str, owner_scopes: frozenset[str],
               wanted: Iterable[str]) -> frozenset[str]:
        """The scopes asked for a new token that name does not hold (JupyterHub refuses the
        token then, naming them)."""
        wanted = set(wanted) - {"inherit"}
        expanded = scopes.expand(wanted, owner=name)
        return expanded - scopes.intersect(expanded, owner_scopes, self.groups_of)
