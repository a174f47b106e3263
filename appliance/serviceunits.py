"""What a JupyterHub service's unit looks like: its name, environment and properties, as data.

Pure functions, tested without a bus (as units.py is for notebook servers); services.py hands
the triples to systemd.py. The environment is JupyterHub's (jupyterhub/services/service.py
Service.start and spawner.py Spawner.get_env, JupyterHub 5 and 6), except the token: it is a
systemd credential that secretenv.py, the unit's ExecStart, puts into the environment of the
command alone, so `systemctl show` and /proc/PID/cmdline never hold it.
Property names and types: org.freedesktop.systemd1(5); meanings: systemd.exec(5),
systemd.service(5).
"""

import hashlib
import json
from pathlib import Path
from urllib.parse import urlsplit

from appliance import hubenv
from appliance.config import ServiceConfig
from appliance.systemd import Property

#: Every service's unit starts with this (the hub finds the ones it started by it).
UNIT_PREFIX = "notebook-appliance-service-"
#: The services' slice (units/notebook_appliance_services.slice). Not "notebook-appliance-
#: services.slice": a "-" in a slice's name puts it inside another (systemd.slice(5)), and
#: inside notebook-appliance.slice the services would count against the students' memory cap
#: and the spawner's admission.
SLICE = "notebook_appliance_services.slice"
#: The credential's name (systemd.exec(5) LoadCredential=), which secretenv.py reads.
CREDENTIAL = "api-token"
#: Debian's interpreter, run isolated (-I): the wrapper imports nothing of the hub.
PYTHON = "/usr/bin/python3"
SECRETENV = Path(__file__).with_name("secretenv.py")
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
#: Between a failed service's exit and its restart: slower than systemd's start limit (5
#: starts in 10 s, systemd-system.conf(5)), so a service that keeps failing keeps being
#: retried, as JupyterHub retries it, without spinning.
RESTART_SECONDS = 5
STOP_SECONDS = 30


def unit_name(name: str) -> str:
    """notebook-appliance-service-<name>.service: a service's name (letters, digits, ".",
    "-", "_": config.py) is valid in a unit's name as it is, and "-" means nothing in a
    service's name (only in a slice's), so it is not escaped."""
    return f"{UNIT_PREFIX}{name}.service"


def prefix(name: str) -> str:
    """Where the service is reached through the hub (JupyterHub's Service.prefix)."""
    return f"/services/{name}/"


def tcp_address(url: str) -> tuple[str, int] | None:
    """A service url's loopback (host, port) (config.py allows no other); None for a UNIX
    socket or no url."""
    if not url.startswith("http"):
        return None
    split = urlsplit(url)
    return "127.0.0.1" if split.hostname == "localhost" else split.hostname, split.port


def environment(name: str, service: ServiceConfig, api_url: str) -> dict[str, str]:
    """JupyterHub's environment for a managed service, without the token. The config's
    environment may override what the hub sets for any process (JupyterHub applies
    Spawner.environment last), but not the service's own name, URL and prefix (Service.start
    sets those over it)."""
    env = {
        "PATH": SAFE_PATH, "LANG": "C.UTF-8",
        "JUPYTERHUB_API_URL": api_url,
        **hubenv.oauth_client_environment(
            hubenv.service_client_id(name), prefix(name),
            ["access:services", hubenv.service_access_scope(name)]),
        # Spawner.get_env names the service's `user` (its _MockUser) and no server; tools
        # that run as a user's server would (nbgrader's formgrader) read them.
        "JUPYTERHUB_USER": service.user,
        "JUPYTERHUB_SERVER_NAME": "",
    }
    env.update(dict(service.environment))
    env["JUPYTERHUB_SERVICE_NAME"] = name
    if service.url:
        env["JUPYTERHUB_SERVICE_URL"] = service.url
        env["JUPYTERHUB_SERVICE_PREFIX"] = prefix(name)
    return env


def command_line(service: ServiceConfig) -> list[str]:
    """ExecStart's argv: secretenv.py puts the credential into JUPYTERHUB_API_TOKEN, then
    execs the service's command."""
    return [PYTHON, "-I", str(SECRETENV), f"JUPYTERHUB_API_TOKEN={CREDENTIAL}", "--",
            *service.command]


def properties(name: str, service: ServiceConfig, api_url: str,
               token_file: Path) -> list[Property]:
    """Every property of a managed service's transient unit; Description carries a
    fingerprint of the rest, so a changed config is told from an unchanged one."""
    argv = command_line(service)
    env = environment(name, service, api_url)
    state = f"{UNIT_PREFIX}{name}"
    props: list[Property] = [
        # exec: the start job fails at once if the wrapper cannot be executed.
        ("Type", "s", "exec"),
        ("ExecStart", "a(sasb)", [[argv[0], argv, False]]),
        ("Environment", "as", [f"{k}={v}" for k, v in env.items()]),
        # Read by PID 1 as root at each start, then readable by the service's user alone
        # (in $CREDENTIALS_DIRECTORY); `systemctl show` names the file, never its contents.
        ("LoadCredential", "a(ss)", [[CREDENTIAL, str(token_file)]]),
        ("Slice", "s", SLICE),
        # JupyterHub restarts a managed service that exits unexpectedly; so does systemd.
        ("Restart", "s", "on-failure"),
        ("RestartUSec", "t", RESTART_SECONDS * 1_000_000),
        ("TimeoutStopUSec", "t", STOP_SECONDS * 1_000_000),
        # A directory it may write (its working directory) and one for a UNIX socket
        # (url = "unix:/run/notebook-appliance-service-<name>/..."), owned by its user.
        ("StateDirectory", "as", [state]),
        ("RuntimeDirectory", "as", [state]),
        # JupyterHub's cwd (e.g. a grader account's home), else its state directory.
        ("WorkingDirectory", "s", str(service.cwd or f"/var/lib/{state}")),
        ("NoNewPrivileges", "b", True),
        ("PrivateTmp", "b", True),
    ]
    if service.user:
        props.append(("User", "s", service.user))
    else:
        # A throwaway uid for the unit's lifetime (systemd.exec(5) DynamicUser=), which also
        # makes the system read-only to it, hides /home and gives it a /tmp of its own.
        props.append(("DynamicUser", "b", True))
    return [("Description", "s", f"JupyterHub service {name} (notebook-appliance, config "
                                 f"{fingerprint(props)})"), *props]


def fingerprint(props: list[Property]) -> str:
    """A short digest of the properties (never of the token, which is not among them)."""
    text = json.dumps(props, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
