"""JupyterHub's side of a user's server: the names JupyterHub gives OAuth clients and their
access scopes, the environment its Spawner.get_env gives, the scopes of the server's API token,
and whether the command does JupyterHub's OAuth itself.

Pure data (no I/O): units.py puts the environment in the unit (the token travels as a file,
through secretenv.py), the spawner keeps the token and the OAuth client (oauth.py).
"""

import json
from pathlib import PurePosixPath
from urllib.parse import quote

from appliance.scopes import DEFAULT_ROLES

#: The variable that carries a server's API token (read from its 0400 file by secretenv.py).
TOKEN_VARIABLE = "JUPYTERHUB_API_TOKEN"
#: jupyter_server takes --sock only with its default port (serverapp.py: "Options --port and
#: --sock are mutually exclusive"), and jupyterhub-singleuser sets the port from
#: $JUPYTERHUB_SERVICE_URL: so that URL names this port, and the server listens on its
#: socket (jupyter_config.py), which is where the hub's proxy reaches it.
JUPYTER_DEFAULT_PORT = 8888


def server_client_id(user: str, server: str = "") -> str:
    """JupyterHub's client id of a user's server (user.py: quoted, as it names a cookie)."""
    client_id = f"jupyterhub-user-{quote(user)}"
    return f"{client_id}-{quote(server)}" if server else client_id


def service_client_id(name: str) -> str:
    """JupyterHub's default client id of a service (Service.oauth_client_id)."""
    return f"service-{name}"


def server_access_scope(user: str, server: str = "") -> str:
    """The scope that opens a user's server (JupyterHub's access_scopes of its client)."""
    return f"access:servers!server={user}/{server}"


def service_access_scope(name: str) -> str:
    """The scope that opens a service."""
    return f"access:services!service={name}"


def speaks_hub_oauth(command: tuple[str, ...]) -> bool:
    """Whether the server command is JupyterHub's single-user server, which logs its browsers
    in through the hub's OAuth itself (jupyterhub-singleuser, python -m jupyterhub.singleuser);
    any other server is authenticated by the hub, which hands it its token."""
    if not command:
        return False
    if PurePosixPath(command[0]).name.startswith("jupyterhub-singleuser"):
        return True
    return any(a == "-m" and b.startswith("jupyterhub.singleuser")
               for a, b in zip(command, command[1:], strict=False))


def server_token_scopes(user: str, server: str = "",
                        role: tuple[str, ...] = DEFAULT_ROLES["server"]) -> tuple[str, ...]:
    """The `server` role's scopes (JupyterHub's, or [roles.server]'s) with their bare filters
    resolved for this server, as JupyterHub resolves them when it spawns it (user.py): `!user`
    is its user's, `!server` this server's; `inherit` stays (the token then does what its user
    does). The token identifies its user as any does."""
    resolved = {"!user": f"!user={user}", "!server": f"!server={user}/{server}"}
    out = []
    for scope in role:
        base, bang, filter_ = scope.partition("!")
        out.append(base + resolved.get(bang + filter_, bang + filter_))
    return tuple(out)


def access_scopes(user: str, server: str = "") -> list[str]:
    """Who may open the server (Spawner.oauth_access_scopes)."""
    return [server_access_scope(user, server), f"access:servers!user={user}"]


def oauth_client_environment(client_id: str, prefix: str,
                             access: list[str]) -> dict[str, str]:
    """What JupyterHub tells an OAuth client of the hub, a server (Spawner.get_env) or a
    service (Service.start) alike: its id, where the browser comes back (under prefix), and
    who may use it (access)."""
    scopes = json.dumps(access)
    return {
        "JUPYTERHUB_CLIENT_ID": client_id,
        # Empty: the hub's pages are on the same origin as the servers (no subdomains).
        "JUPYTERHUB_HOST": "",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": prefix + "oauth_callback",
        # JUPYTERHUB_OAUTH_SCOPES is the name before JupyterHub 3; both are set, as there.
        "JUPYTERHUB_OAUTH_SCOPES": scopes,
        "JUPYTERHUB_OAUTH_ACCESS_SCOPES": scopes,
        "JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES": json.dumps([]),
        "JUPYTERHUB_COOKIE_HOST_PREFIX_ENABLED": "0",
        # hub.base_url ("/hub/") without "hub/".
        "JUPYTERHUB_BASE_URL": "/",
    }


def environment(user: str, server: str, prefix: str, hub_url: str) -> dict[str, str]:
    """The JUPYTERHUB_* variables of Spawner.get_env (jupyterhub/spawner.py), for the server
    at prefix (/user/<name>/[<server>/]) of a hub whose servers reach it at hub_url; all but
    the token, which is no variable of the unit."""
    api_url = hub_url.rstrip("/") + "/hub/api"
    return {
        **oauth_client_environment(server_client_id(user, server), prefix,
                                   access_scopes(user, server)),
        "JUPYTERHUB_USER": user,
        "JUPYTERHUB_SERVER_NAME": server,
        "JUPYTERHUB_API_URL": api_url,
        "JUPYTERHUB_ACTIVITY_URL": f"{api_url}/users/{quote(user, safe='')}/activity",
        "JUPYTERHUB_SERVICE_PREFIX": prefix,
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{JUPYTER_DEFAULT_PORT}{prefix}",
        # No public URL is configured (JupyterHub's public_url): empty, as there.
        "JUPYTERHUB_PUBLIC_URL": "",
        "JUPYTERHUB_PUBLIC_HUB_URL": "",
    }


def server_facts(default_url: str, memory: int, cpu: float,
                 admin_access: bool) -> dict[str, str]:
    """The rest of Spawner.get_env: the first page, the limits (for extensions such as
    jupyter-resource-usage: MEM_LIMIT in bytes, CPU_LIMIT in cores) and whether admins may
    open the server."""
    env = {"JUPYTERHUB_DEFAULT_URL": default_url, "MEM_LIMIT": str(memory),
           "CPU_LIMIT": f"{cpu:g}"}
    if admin_access:
        env["JUPYTERHUB_ADMIN_ACCESS"] = "1"
    return env


def hub_url(listen: str, port: int, tls: bool) -> str:
    """Where a server on this machine reaches the hub listening on listen:port: loopback
    when it listens on every address (or on loopback), else that address."""
    scheme = "https" if tls else "http"
    if listen in ("0.0.0.0", "127.0.0.1", ""):
        return f"{scheme}://127.0.0.1:{port}"
    if listen in ("::", "::1"):  # Python's and systemd's "::" may be IPv6 only (IPV6_V6ONLY)
        return f"{scheme}://[::1]:{port}"
    host = f"[{listen}]" if ":" in listen else listen
    return f"{scheme}://{host}:{port}"
