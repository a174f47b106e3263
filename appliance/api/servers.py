"""The servers resource: start and stop a user's default and named servers, and follow a
start's progress as server-sent events (JupyterHub's /users/<name>/server[s/<server>])."""

import asyncio
import json

from aiohttp import web

from appliance import access, cgroups, profiles
from appliance.api.base import authorize, isoformat, json_object
from appliance.errors import BadRequest, NotFound
from appliance.events import Cause
from appliance.units import Owner
from appliance.userserver import Server, ServerState, check_server_name

#: How long POST/DELETE wait before answering 202 (JupyterHub's slow_spawn_timeout).
SLOW_TIMEOUT = 10.0
#: Event-stream keepalive interval (JupyterHub uses 8 s).
KEEPALIVE_SECONDS = 8.0


def setup(app: web.Application) -> None:
    """Register the server routes: the default server, and JupyterHub's named servers under
    .../servers/<server>."""
    r = app.router
    for path in ("/hub/api/users/{name}/server", "/hub/api/users/{name}/servers/{server}"):
        r.add_get(path, get_server)
        r.add_post(path, start_server)
        r.add_delete(path, stop_server)
        r.add_get(path + "/progress", progress)
    app["progress_streams"] = set()
    app.on_shutdown.append(end_progress_streams)


def api_path(server: Server) -> str:
    """The server's resource under /hub/api (JupyterHub's layout)."""
    if server.name:
        return f"/hub/api/users/{server.user}/servers/{server.name}"
    return f"/hub/api/users/{server.user}/server"


def server_model(server: Server, sampler=None) -> dict:
    """One entry of a user's `servers`, JupyterHub's fields; with the cgroup sampler, its live
    memory, limit and CPU too, and why it stopped or what happened to it in words (extra
    fields: JupyterHub's clients ignore them). `state` is for admin:server_state alone
    (users.visible takes it out for others)."""
    live = cgroups.figures(sampler, server) if sampler is not None else {}
    stopped = server.state == ServerState.STOPPED
    return {**live,
        "name": server.name, "full_name": f"{server.user}/{server.name}",
        # JupyterHub 6 names a server for people here; ours are named by their owners.
        "display_name": server.name,
        "ready": server.ready, "pending": server.pending,
        "url": server.url,
        # Absolute URLs need the public URL, which the hub does not know (JupyterHub: null
        # without public_url too).
        "full_url": None, "full_progress_url": None,
        # A stopped server has no start time (JupyterHub clears it on stop).
        "started": None if stopped else isoformat(server.started),
        "last_activity": isoformat(server.last_activity),
        "progress_url": api_path(server) + "/progress",
        "user_options": {"profile": server.profile.name} if server.profile else {},
        "stopped": stopped,
        "state": {"unit": server.unit}, "stopped_reason": server.message or None,
        "notice": server.notice or None,
    }


def server_name(request: web.Request) -> str:
    """The named server in the URL ("" for the default server), checked."""
    name = request.match_info.get("server", "")
    return check_server_name(name) if name else ""


async def start_spawn(request: web.Request, name: str, server: str,
                      profile_name: str | None) -> Server:
    """Start one of name's servers with the profile asked for (or their default).

    The account is looked up and checked against the policy now: a start uses its groups.
    """
    account = await request.app["auth"].account(name)
    await request.app["store"].ensure_user(account.name, account.admin)
    profile = profiles.choose(request.app["profiles"], account.groups, profile_name)
    owner = Owner(account.name, account.uid, account.gid, account.home, account.shell)
    return await request.app["spawner"].start(owner, profile, server)


async def user_options(request: web.Request) -> dict:
    """JupyterHub's user_options: the POST body, a JSON object (or nothing)."""
    example = '{"profile": "large"}'
    options = await json_object(request, "user_options", example)
    if not isinstance(options.get("profile", ""), str):
        raise BadRequest("user_options must be an object with a string profile",
                         user_message=f"Send user_options as a JSON object, like {example}.")
    return options


async def start_server(request: web.Request) -> web.Response:
    """POST .../server or .../servers/{server}: 201 when ready within SLOW_TIMEOUT, else 202.

    The body is JupyterHub's user_options: {"profile": "large"} picks a profile.
    """
    name, server_name_ = request.match_info["name"], server_name(request)
    await authorize(request, "servers", server=f"{name}/{server_name_}")
    options = await user_options(request)
    spawner = request.app["spawner"]
    server = spawner.find(name, server_name_)
    if server is not None and server.pending == "spawn":  # as JupyterHub: asking again is fine
        return web.json_response(server_model(server), status=202)
    server = await start_spawn(request, name, server_name_, options.get("profile") or None)
    ready = await spawner.wait_ready(server, SLOW_TIMEOUT)
    if not ready and server.state == "stopped":
        return web.json_response({"status": 500, "message": server.message}, status=500)
    return web.json_response(server_model(server), status=201 if ready else 202)


async def stop_server(request: web.Request) -> web.Response:
    """DELETE .../server or .../servers/{server}: 204 when stopped, 202 while stopping.

    A named server's body may say {"remove": true}: it is then forgotten once stopped.
    """
    name, server_name_ = request.match_info["name"], server_name(request)
    identity = await authorize(request, "delete:servers", server=f"{name}/{server_name_}")
    remove = bool(server_name_ and (await user_options(request)).get("remove"))
    spawner = request.app["spawner"]
    server = spawner.find(name, server_name_)
    if server is None:
        if server_name_:
            raise NotFound(f"{name} has no server {server_name_!r}",
                           user_message=f"There is no server named {server_name_!r}.")
        return web.Response(status=204)
    if server.state == ServerState.STOPPED or server.pending == "stop":
        if remove and server.state == ServerState.STOPPED:
            await spawner.remove(name, server_name_)
        return web.Response(status=204 if server.state == ServerState.STOPPED else 202)
    task = asyncio.ensure_future(_stop(spawner, name, server_name_, remove,
                                       access.stop_cause(identity, name)))
    done, _ = await asyncio.wait({task}, timeout=SLOW_TIMEOUT)
    if task in done:
        task.result()
        return web.Response(status=204)
    return web.Response(status=202)


async def _stop(spawner, name: str, server: str, remove: bool, cause: Cause) -> None:
    """Stop, then forget the named server when asked to."""
    await spawner.stop(name, server, cause=cause)
    if remove:
        await spawner.remove(name, server)


async def get_server(request: web.Request) -> web.Response:
    """GET .../server[s/<server>]: the server's model (JupyterHub 6's server resource)."""
    name, named = request.match_info["name"], server_name(request)
    identity = await authorize(request, "read:servers", server=f"{name}/{named}")
    spawner = request.app["spawner"]
    server = spawner.find(name, named) if named else spawner.get(name)
    if server is None:
        raise NotFound(f"{name} has no server {named!r}",
                       user_message=f"There is no server named {named!r}.")
    model = server_model(server, spawner.sampler)
    if not access.allows(identity, "admin:server_state", server=f"{name}/{named}",
                         groups_of=request.app["groups"].of_user):
        del model["state"]
    return web.json_response(model)


async def progress(request: web.Request) -> web.StreamResponse:
    """GET .../progress: server-sent events until ready or failed, or the hub stops."""
    name, named = request.match_info["name"], server_name(request)
    await authorize(request, "read:servers", server=f"{name}/{named}")
    spawner = request.app["spawner"]
    server = spawner.find(name, named) if named else spawner.get(name)
    if server is None:
        raise NotFound(f"{name} has no server {named!r}",
                       user_message=f"There is no server named {named!r}.")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
    await response.prepare(request)
    keepalive = asyncio.create_task(_keepalive(response))
    relay = asyncio.create_task(_relay_progress(response, spawner, server))
    streams = request.app["progress_streams"]
    streams.add(relay)
    try:
        await asyncio.wait({relay})  # ends early when end_progress_streams cancels it
        if not relay.cancelled():
            relay.result()  # a write error, re-raised
    finally:
        streams.discard(relay)
        relay.cancel()
        keepalive.cancel()
    return response


async def _relay_progress(response: web.StreamResponse, spawner, server: Server) -> None:
    """Write the spawn's events as they come: a late watcher first sees the ready event."""
    if server.ready and not server.progress.events:  # adopted after a restart
        await _send_event(response, {"progress": 100, "ready": True, "url": server.url,
                                     "message": f"Server ready at {server.url}"})
    if server.pending != "spawn":  # nothing under way: what there was, then the end
        for event in server.progress.events:
            await _send_event(response, event)
        if not server.ready and not server.progress.finished:
            # Nothing will come: say so, or a spawn page would wait (and reload) for ever.
            await _send_event(response, {"progress": 100, "failed": True, "message":
                                         server.message or "The server is not running."})
        return
    async for event in server.progress.follow():
        await _send_event(response, event)


async def end_progress_streams(app: web.Application) -> None:
    """On hub stop: end open progress streams, so browsers reconnect to the next hub at once
    instead of holding this one's shutdown; the spawn itself goes on in systemd."""
    for relay in list(app["progress_streams"]):
        relay.cancel()


async def _keepalive(response: web.StreamResponse) -> None:
    """Blank lines every few seconds so intermediate proxies keep a slow stream open."""
    while True:
        await asyncio.sleep(KEEPALIVE_SECONDS)
        await response.write(b"\n\n")


async def _send_event(response: web.StreamResponse, event: dict) -> None:
    await response.write(f"data: {json.dumps(event)}\n\n".encode())
