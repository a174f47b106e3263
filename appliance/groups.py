"""Hub groups (JupyterHub's): those made through the API, kept in the store, and the unix
groups named in auth.sync_groups, mirrored read-only so a course's unix group is a hub group.

Who is in which group is held in memory, so a scope check with a !group= filter costs no
query: the store's groups are re-read after every change made here, the unix groups every
UNIX_EVERY seconds at most (NSS lookups run on a thread: they may block).
"""

import asyncio
import grp
import logging
import pwd
import time
from dataclasses import dataclass

from appliance.errors import BadRequest, NotFound
from appliance.store import Store

log = logging.getLogger(__name__)

#: How stale the mirrored unix groups may be (seconds) before a read looks again.
UNIX_EVERY = 30.0


@dataclass(frozen=True)
class Group:
    """A hub group as the API shows it."""

    name: str
    users: tuple[str, ...]
    properties: dict
    #: True for a mirrored unix group (auth.sync_groups): read-only here.
    unix: bool = False


def unix_members(names: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Each unix group's members: listed in /etc/group or having it as primary group
    (blocking NSS lookups: run it on a thread). A group that does not exist is empty."""
    found: dict[str, set[str]] = {}
    gids = {}
    for name in names:
        try:
            entry = grp.getgrnam(name)
        except KeyError:
            log.warning("auth.sync_groups: there is no unix group %r; it stays empty", name)
            found[name] = set()
            continue
        found[name] = set(entry.gr_mem)
        gids[entry.gr_gid] = name
    if gids:
        for pw in pwd.getpwall():
            if pw.pw_gid in gids:
                found[gids[pw.pw_gid]].add(pw.pw_name)
    return {name: tuple(sorted(members)) for name, members in found.items()}


class Groups:
    """Every hub group, and who is in which."""

    def __init__(self, store: Store, sync_groups: tuple[str, ...]):
        self.store = store
        self.sync_groups = sync_groups
        self._hub: dict[str, Group] = {}
        self._unix: dict[str, Group] = {}
        self._unix_at = -UNIX_EVERY
        self._by_user: dict[str, frozenset[str]] = {}

    async def refresh(self, unix: bool = True) -> None:
        """Read the store's groups again, and the unix ones when asked to."""
        self._hub = {g.name: Group(g.name, g.users, g.properties)
                     for g in await self.store.groups()}
        if unix and self.sync_groups:
            loop = asyncio.get_running_loop()
            members = await loop.run_in_executor(None, unix_members, self.sync_groups)
            self._unix = {name: Group(name, users, {}, unix=True)
                          for name, users in members.items()}
            self._unix_at = time.monotonic()
        by_user: dict[str, set[str]] = {}
        for group in self.all():
            for user in group.users:
                by_user.setdefault(user, set()).add(group.name)
        self._by_user = {user: frozenset(names) for user, names in by_user.items()}

    async def fresh(self) -> None:
        """Look at the unix groups again if they are older than UNIX_EVERY."""
        if self.sync_groups and time.monotonic() - self._unix_at > UNIX_EVERY:
            await self.refresh()

    def all(self) -> list[Group]:
        """The mirrored unix groups, then the hub's own, in the order they were made."""
        return [*self._unix.values(), *(g for n, g in self._hub.items() if n not in self._unix)]

    def of_user(self, name: str) -> frozenset[str]:
        """The names of the groups name is in."""
        return self._by_user.get(name, frozenset())

    def get(self, name: str) -> Group:
        """A group by name; NotFound (JupyterHub's words) when there is none."""
        group = self._unix.get(name) or self._hub.get(name)
        if group is None:
            raise NotFound(f"no group {name!r}", user_message=f"No such group: {name}")
        return group

    def exists(self, name: str) -> bool:
        """Whether there is a group of that name (hub or unix)."""
        return name in self._unix or name in self._hub

    def writable(self, name: str) -> Group:
        """A group the API may change: NotFound, or a 400 for a mirrored unix group."""
        group = self.get(name)
        if group.unix:
            raise BadRequest(f"group {name!r} mirrors a unix group", user_message=(
                f"Group {name} mirrors the unix group {name} (auth.sync_groups) and is "
                f"read-only here: change its members on the hub's machine with "
                f"'adduser USER {name}' or 'deluser USER {name}'."))
        return group

    async def create(self, name: str, users: list[str]) -> bool:
        """Make a hub group; False when one of that name exists (hub or unix)."""
        if name in self._unix:
            return False
        made = await self.store.create_group(name, users)
        await self.refresh(unix=False)
        return made

    async def delete(self, name: str) -> None:
        """Delete a hub group."""
        self.writable(name)
        await self.store.delete_group(name)
        await self.refresh(unix=False)

    async def set_members(self, name: str, users: list[str], member: bool) -> None:
        """Add (member) or remove users."""
        self.writable(name)
        await self.store.set_group_members(name, users, member)
        await self.refresh(unix=False)

    async def set_properties(self, name: str, properties: dict) -> None:
        """Replace a hub group's properties."""
        self.writable(name)
        await self.store.set_group_properties(name, properties)
        await self.refresh(unix=False)
