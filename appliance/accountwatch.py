"""Sessions, tokens and servers follow the account they belong to.

Every auth.recheck_every (60 s), each user who holds a live session, an unexpired token or a
server is looked up again (auth.account: the account exists, its uid is allowed, it is in an
allowed group, /etc/shadow neither locks nor expires it). A refused account's sessions end,
its cached identity is dropped (its tokens are then refused: every lookup re-checks the
account), and its servers are stopped, with the reason in the journal. Expired sessions are
purged on the way.
"""

import logging

from aiohttp import web

from appliance import periodic
from appliance.errors import Conflict, NotFound
from appliance.events import Cause
from appliance.userserver import ServerState

log = logging.getLogger(__name__)

#: What the owner reads on the home page if they get in again (an admin unlocked them).
STOPPED_REASON = "Your server was stopped because your account was locked, expired or " \
                 "is no longer allowed to use this service."


async def recheck(app: web.Application) -> list[str]:
    """One round: the users refused now (each already logged out and stopped)."""
    store, spawner = app["store"], app["spawner"]
    await app["groups"].refresh()  # the mirrored unix groups too: membership is NSS's
    purged = await store.purge_expired_sessions()
    if purged:
        log.info("purged %d expired session(s)", purged)
    holders = set(await store.users_with_credentials())
    holders |= {s.user for s in spawner.servers.values() if s.state != ServerState.STOPPED}
    refused = []
    for name in sorted(holders):
        try:
            await app["auth"].account(name)
        except NotFound as e:
            await refuse(app, name, str(e))
            refused.append(name)
    return refused


async def refuse(app: web.Application, name: str, why: str) -> None:
    """End a refused account's sessions, forget its identity, stop its servers."""
    ended = await app["store"].end_sessions_of(name)
    app["identities"].forget_user(name)
    stopped = 0
    for server in app["spawner"].of_user(name):
        if server.state in (ServerState.STARTING, ServerState.RUNNING):
            try:
                await app["spawner"].stop(name, server.name, reason=STOPPED_REASON,
                                          cause=Cause.ACCOUNT)
                stopped += 1
            except Conflict:
                pass  # it stopped on its own meanwhile
    log.warning("user=%r refused on re-check: %s; %d session(s) ended, %d server(s) stopped",
                name, why, ended, stopped)


async def remove_from_hub(app: web.Application, name: str, by: str) -> tuple[int, int, int]:
    """Forget a user (an admin's "Remove from hub", the API's DELETE): stop their servers,
    end their sessions and tokens, drop their row; the OS account stays. (servers, sessions,
    tokens) ended."""
    stopped = 0
    for server in app["spawner"].of_user(name):
        if server.state in (ServerState.STARTING, ServerState.RUNNING):
            try:
                await app["spawner"].stop(name, server.name, cause=Cause.ADMIN)
                stopped += 1
            except Conflict:
                pass  # it stopped on its own meanwhile
    sessions, tokens = await app["store"].remove_user(name)
    app["identities"].forget_user(name)
    await app["groups"].refresh(unix=False)  # the store dropped them from hub groups too
    log.warning("user=%r removed from the hub by %r: %d server(s) stopped, %d session(s) "
                "and %d token(s) ended; the OS account is kept", name, by, stopped, sessions,
                tokens)
    return stopped, sessions, tokens


#: cleanup_ctx: the re-check runs every auth.recheck_every while the hub does.
watch_ctx = periodic.job("account re-check", lambda app: app["config"].auth.recheck_every,
                         recheck)
