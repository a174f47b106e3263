"""The pages that start, watch and stop servers: spawn (with its profile choice), pending,
stop, and a user's named servers (new, remove).

Each route exists for the default server (/hub/spawn/alice) and for a named one
(/hub/spawn/alice/lab), as in JupyterHub.
"""

from urllib.parse import quote

from aiohttp import web

from appliance import access, profiles
from appliance.api import api_path, start_spawn
from appliance.pages import checked_form, current, redirect, render, safe_next
from appliance.userserver import Server, ServerState, check_server_name


def setup(app: web.Application) -> None:
    """Register the routes, for default and named servers alike."""
    r = app.router
    for tail in ("{name}", "{name}/{server}"):
        r.add_get(f"/hub/spawn/{tail}", spawn_form)
        r.add_post(f"/hub/spawn/{tail}", spawn_submit)
        r.add_post(f"/hub/stop/{tail}", stop_submit)
        r.add_get(f"/hub/spawn-pending/{tail}", spawn_pending)
    r.add_post("/hub/new-server/{name}", new_server_submit)
    r.add_post("/hub/remove/{name}/{server}", remove_submit)


async def server_in_url(request: web.Request) -> Server | None:
    """The server named in the URL; only its owner or an admin may start, stop or watch it.

    None for a named server the hub does not know (the default one always exists).
    """
    identity = await current(request)
    name = request.match_info["name"]
    access.check(identity, name, "This is not your server.")
    spawner = request.app["spawner"]
    server_name = request.match_info.get("server", "")
    if not server_name:
        return spawner.get(name)
    return spawner.find(name, check_server_name(server_name))


async def choices(request: web.Request, user: str) -> tuple[list, profiles.Profile]:
    """The profiles user may choose, and the one preselected for them."""
    account = await request.app["auth"].account(user)
    open_ = profiles.open_to(request.app["profiles"], account.groups)
    return open_, profiles.choose(request.app["profiles"], account.groups, None)


async def spawn_form(request: web.Request) -> web.Response:
    """GET /hub/spawn/{name}[/{server}]: running servers are opened, stopped ones offer the
    profiles to choose from and a button."""
    server = await server_in_url(request)
    if server is None:  # a new named server: the home page's form makes it
        return redirect("/hub/home")
    target = safe_next(request.query.get("next"), server.url)
    if server.ready:
        return redirect(target)
    if server.pending == "spawn":
        return redirect(f"/hub/spawn-pending/{server.route}?next={quote(target)}")
    options, preselected = await choices(request, server.user)
    if server.profile in options:
        preselected = server.profile
    return render(request, "spawn.html", name=server.user, server=server, next=target,
                  action=f"/hub/spawn/{server.route}", profiles=options,
                  preselected=preselected)


async def spawn_submit(request: web.Request) -> web.Response:
    """POST /hub/spawn/{name}[/{server}]: start with the chosen profile, then watch it."""
    server = await server_in_url(request)
    form = await checked_form(request)
    if server is None or server.state == ServerState.STOPPED:
        named = request.match_info.get("server", "")
        server = await start_spawn(request, request.match_info["name"], named,
                                   str(form.get("profile", "")) or None)
    target = safe_next(str(form.get("next", "")), server.url)
    return redirect(f"/hub/spawn-pending/{server.route}?next={quote(target)}")


async def new_server_submit(request: web.Request) -> web.Response:
    """POST /hub/new-server/{name}: the home page's form for a new named server."""
    identity = await current(request)
    name = request.match_info["name"]
    access.check(identity, name, "This is not your server.")
    form = await checked_form(request)
    server_name = check_server_name(str(form.get("server_name", "")).strip())
    server = await start_spawn(request, name, server_name,
                               str(form.get("profile", "")) or None)
    return redirect(f"/hub/spawn-pending/{server.route}")


async def stop_submit(request: web.Request) -> web.Response:
    """POST /hub/stop/{name}[/{server}]: stop the server and go home."""
    server = await server_in_url(request)
    await checked_form(request)
    if server is not None:
        cause = access.stop_cause(request["identity"], server.user)
        await request.app["spawner"].stop(server.user, server.name, cause=cause)
    return redirect("/hub/home")


async def remove_submit(request: web.Request) -> web.Response:
    """POST /hub/remove/{name}/{server}: forget a stopped named server."""
    server = await server_in_url(request)
    await checked_form(request)
    if server is not None:
        await request.app["spawner"].remove(server.user, server.name)
    return redirect("/hub/home")


async def spawn_pending(request: web.Request) -> web.Response:
    """GET /hub/spawn-pending/{name}[/{server}]: a progress bar fed by the progress stream."""
    server = await server_in_url(request)
    if server is None:
        return redirect("/hub/home")
    target = safe_next(request.query.get("next"), server.url)
    if server.ready:
        return redirect(target)
    if server.state == ServerState.STOPPED:  # cancelled, failed, or an old bookmark
        return redirect(f"/hub/spawn/{server.route}?next={quote(target)}")
    return render(request, "spawn_pending.html", name=server.user, server=server, next=target,
                  progress_url=quote(api_path(server) + "/progress"),
                  stop_url=f"/hub/stop/{server.route}")
