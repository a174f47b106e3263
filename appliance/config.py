"""Configuration: one table of keys, defaults and help; load() validates it all at start-up."""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from fractions import Fraction
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .scopes import ScopeNotFound, check_exist

_UNSET = object()


class _Bad(ValueError):
    """A value failed its parser: says what was expected, optionally for which sub-key."""

    def __init__(self, expected: str, *, subkey: str = "", got: Any = _UNSET):
        super().__init__(expected)
        self.expected, self.subkey, self.got = expected, subkey, got


def _expect(ok: object, expected: str) -> None:
    """Raise _Bad(expected) unless ok is true."""
    if not ok:
        raise _Bad(expected)


def _is_int(value: object) -> bool:
    """True for a TOML integer (TOML booleans are not integers here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    """True for a finite TOML integer or float (TOML booleans are not numbers here)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# --- parsers: TOML value -> Python value, or _Bad ------------------------------------------

_SIZE = re.compile(r"(\d+(?:\.\d+)?)(?:([KMGT])(?:iB)?)?")
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[dhms])+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_DURATION_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_NAME = re.compile(r"[^\s/:]+")  # user, group and PAM service names: no blanks, "/" or ":"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# systemd.unit(5): unit name characters; in a slice name "-" separates hierarchy levels.
_SLICE = re.compile(r"[\w:.\\]+(?:-[\w:.\\]+)*\.slice", re.ASCII)


def parse_size(value: object) -> int:
    """Bytes from an int or "512M", "1.5G", "2GiB" (K/M/G/T: powers of 1024, as systemd)."""
    if isinstance(value, str) and (m := _SIZE.fullmatch(value)):
        value = int(Fraction(m[1]) * _SIZE_UNITS[m[2] or ""])
    _expect(_is_int(value) and value > 0, 'expected a size like "2G"')
    return value


def parse_duration(value: object) -> float:
    """Seconds from a number or "30s", "15m", "8h", "14d", "1h30m"; must be > 0."""
    if isinstance(value, str) and _DURATION.fullmatch(value):
        value = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(value))
    _expect(_is_number(value) and value > 0, 'expected a duration like "90s", "15m" or "1h30m"')
    return float(value)


def _check(ok: Callable[[Any], object], expected: str,
           convert: Callable[[Any], Any] = lambda v: v) -> Callable[[object], Any]:
    """Parser accepting the values for which ok(value) is true, then converting them."""
    def parse(value: object) -> Any:
        _expect(ok(value), expected)
        return convert(value)
    return parse


def _int(lo: int, hi: float = math.inf, expected: str = "") -> Callable[[object], int]:
    """Parser for an integer from lo to hi."""
    default = f"expected an integer >= {lo}" if hi == math.inf else \
        f"expected an integer from {lo} to {hi}"
    return _check(lambda v: _is_int(v) and lo <= v <= hi, expected or default)


def _name(what: str) -> Callable[[object], str]:
    """Parser for a non-empty name without blanks, "/" or ":"."""
    return _check(lambda v: isinstance(v, str) and _NAME.fullmatch(v), f"expected {what}")


def _list(item: Callable[[object], str], expected: str, nonempty: bool = False
          ) -> Callable[[object], tuple[str, ...]]:
    """Parser for a list whose items all pass item, as a tuple."""
    def parse(value: object) -> tuple[str, ...]:
        _expect(isinstance(value, list) and (value or not nonempty), expected)
        try:
            return tuple(item(v) for v in value)
        except _Bad:
            raise _Bad(expected) from None
    return parse


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _proxy(value: object) -> IPNetwork:
    """A proxy's address or network ("10.0.0.1", "10.0.0.0/8", "::1") as a network."""
    try:
        return ipaddress.ip_network(value if isinstance(value, str) else None, strict=False)
    except ValueError:
        raise _Bad('expected an address or network like "127.0.0.1" or "10.0.0.0/8"') from None


def _proxies(value: object) -> tuple[IPNetwork, ...]:
    """A list of proxies' addresses or networks."""
    _expect(isinstance(value, list), 'expected a list like ["127.0.0.1", "10.0.0.0/8"]')
    return tuple(_proxy(v) for v in value)


def _ip(value: object) -> str:
    """An IPv4 or IPv6 address, kept as the string given."""
    try:
        ipaddress.ip_address(value if isinstance(value, str) else None)
    except ValueError:
        raise _Bad('expected an IP address like "0.0.0.0" or "::"') from None
    return value


def _network(value: object) -> str:
    """An address range like "169.254.0.0/16" (or one address), normalised."""
    try:
        return str(ipaddress.ip_network(value if isinstance(value, str) else None,
                                        strict=False))
    except ValueError:
        raise _Bad('expected an address range like "169.254.0.0/16"') from None


_string = _check(lambda v: isinstance(v, str), "expected a string")
_bool = _check(lambda v: isinstance(v, bool), "expected true or false")
_cores = _check(lambda v: _is_number(v) and v > 0, "expected a number of cores > 0 like 1.5", float)
_abs_path = _check(lambda v: isinstance(v, str) and v.startswith("/"), "expected an absolute path",
                   Path)
_opt_path = _check(lambda v: isinstance(v, str) and (v == "" or v.startswith("/")),
                   'expected an absolute path or ""', lambda v: Path(v) if v else None)
_slice = _check(lambda v: isinstance(v, str) and len(v) <= 255 and _SLICE.fullmatch(v),
                'expected a slice unit name like "notebook-appliance.slice"')
_groups = _list(_name("a group name"), "expected a list of group names")
_users = _list(_name("a user name"), "expected a list of user names")
_argv = _list(_string, "expected a non-empty list of strings", nonempty=True)
_abs_paths = _list(_abs_path, "expected a list of absolute paths")
_domain = _check(lambda v: isinstance(v, str) and (v == "" or re.fullmatch(
    r"(?=.{1,200}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*", v)),
    'expected a lower-case DNS name like "box.example" (or "" for off)')
_networks = _list(_network, 'expected a list of address ranges like ["169.254.0.0/16"]')
_admission = _check(lambda v: v in ("usage", "limits"), 'expected "usage" or "limits"')
_url_path = _check(lambda v: isinstance(v, str) and re.fullmatch(r"/\S*", v),
                   'expected a URL path starting with "/"')


def _environment(value: object) -> tuple[tuple[str, str], ...]:
    """A table of environment variables, as sorted (name, value) pairs."""
    _expect(isinstance(value, dict), 'expected a table like { LANG = "C.UTF-8" }')
    for key, val in value.items():
        if not _ENV_NAME.fullmatch(key):
            raise _Bad("expected a variable name of letters, digits and _ not starting with a "
                       "digit", subkey=_toml_key(key), got=key)
        if not isinstance(val, str):
            raise _Bad("expected a string", subkey=_toml_key(key), got=val)
    return tuple(sorted(value.items()))


# --- the single table: each field carries its TOML default, parser and help line ----------

def _opt(default: object, parse: Callable[[object], Any], help: str) -> Any:
    """A config key: TOML default, parser to the Python value, one-line help."""
    return field(metadata={"default": default, "parse": parse, "help": help})


@dataclass(frozen=True)
class HubConfig:
    """The web front door: where the hub listens and keeps its state."""

    listen: str = _opt("0.0.0.0", _ip,
        'Address the hub binds to: an IPv4 or IPv6 address ("::" for all).')
    port: int = _opt(8000, _int(1, 65535),
        "TCP port the hub listens on.")
    state_dir: Path = _opt("/var/lib/notebook-appliance", _abs_path,
        "Directory for the hub's persistent state (absolute path).")
    runtime_dir: Path = _opt("/run/notebook-appliance", _abs_path,
        "Directory below which each server's socket directory lives.")
    session_max_age: float = _opt("14d", parse_duration,
        "How long a login session lasts before logging in again.")
    ssl_cert: Path | None = _opt("", _opt_path,
        'PEM certificate file for HTTPS; "" serves plain HTTP.')
    ssl_key: Path | None = _opt("", _opt_path,
        "PEM private key for ssl_cert; set both or neither.")
    redirect_port: int = _opt(0, _int(0, 65535),
        "With TLS: a plain-HTTP port that redirects browsers to HTTPS (0 = none, e.g. 80).")
    trusted_proxies: tuple[IPNetwork, ...] = _opt([], _proxies,
        "Proxies (addresses or networks) whose X-Forwarded-For names the client, e.g. "
        '["127.0.0.1"] behind nginx on this box; [] trusts nobody (every local user is a '
        "loopback peer).")
    user_domain: str = _opt("", _domain,
        'Per-user origins: the hub answers at this name and each user\'s servers at '
        '<user>.<this name> (DNS for both, and with TLS a certificate for both; "" = off: '
        "every server on the hub's own origin).")
    header_timeout: float = _opt("15s", parse_duration,
        "Close a connection that sends no complete request headers this long after opening "
        "or after its last answer.")
    max_connections_per_address: int = _opt(3000, _int(1),
        "Connections one client address may hold (a class behind NAT is one address, about "
        "10 each); more are closed at once.")


@dataclass(frozen=True)
class AuthConfig:
    """Who may log in (PAM) and who is an administrator."""

    pam_service: str = _opt("notebook-appliance", _name("a PAM service name"),
        "PAM service (file in /etc/pam.d) used to check passwords.")
    min_uid: int = _opt(1000, _int(1, 2**32 - 2, "expected a uid >= 1 (0 would let root log in)"),
        "Accounts with a lower uid (root, system accounts) can never log in.")
    allowed_groups: tuple[str, ...] = _opt([], _groups,
        "Unix groups allowed to log in; [] allows every account.")
    admin_group: str = _opt("notebook-admins", _string,
        'Members of this Unix group are administrators; "" for none.')
    admin_users: tuple[str, ...] = _opt([], _users,
        "User names that are administrators too.")
    admin_access: bool = _opt(False, _bool,
        "Whether administrators may open (use) other users' servers; they may always start "
        "and stop them.")
    sync_groups: tuple[str, ...] = _opt([], _groups,
        "Unix groups mirrored as hub groups (read-only: change them with adduser/deluser), "
        'e.g. ["course-101"]; JupyterHub tools and [roles.*] see them as groups.')
    manage_accounts: bool = _opt(False, _bool,
        "Whether the admin page may import a roster (create OS accounts with initial "
        "passwords); off, it only reads. `notebook-appliance roster import` works either way.")
    recheck_every: float = _opt("60s", parse_duration,
        "How often everyone with a session, token or server is checked again: a locked, "
        "expired, removed or no longer allowed account loses its sessions and its server.")
    pam_threads: int = _opt(4, _int(1, 64),
        "Threads checking passwords with PAM at once.")
    pam_queue: int = _opt(500, _int(0, 100_000),
        "Logins that may wait for a PAM thread; more get 503 with Retry-After (keep it above "
        "a class logging in at once).")
    lookup_threads: int = _opt(2, _int(1, 64),
        "Threads re-checking logged-in users' accounts, apart from PAM's (a flood of bad "
        "logins never slows them).")
    max_failures: int = _opt(5, _int(1, 1000),
        "Failed logins from one address for one user name before a lockout (429).")
    max_failures_per_address: int = _opt(50, _int(1, 100_000),
        "Failed logins from one address, any user names, before a lockout: generous, since a "
        "whole class may share one NAT address (one user name locks after max_failures).")
    lockout: float = _opt("1m", parse_duration,
        "The first lockout; each further failure doubles it.")
    lockout_max: float = _opt("15m", parse_duration,
        "The longest lockout; failures are forgotten this long after the last one.")


@dataclass(frozen=True)
class SpawnerConfig:
    """How each user's notebook server is started as a transient systemd unit."""

    command: tuple[str, ...] = _opt(["jupyter-notebook"], _argv,
        'Notebook server command line, e.g. ["python3", "-m", "jupyter_server"].')
    start_timeout: float = _opt("120s", parse_duration,
        "How long a server may take to answer before it counts as failed.")
    stop_timeout: float = _opt("30s", parse_duration,
        "How long a server may take to stop before it is killed.")
    concurrent_spawns: int = _opt(4, _int(1, 1000),
        "Servers that launch at once; later starts wait in line (measured best on 2 cores).")
    admission: str = _opt("usage", _admission,
        'A start waits while the servers\' use ("usage") or limits ("limits") plus its own '
        "limit exceed the slice's MemoryMax.")
    named_servers_limit: int = _opt(0, _int(0, 100),
        "Named servers a user may have besides the default one (0 = named servers off).")
    restart_cooldown: float = _opt("2s", parse_duration,
        "Least time between two starts of one user's server (slows start-stop loops).")
    slice: str = _opt("notebook-appliance.slice", _slice,
        "systemd slice that holds every user's server unit.")
    hardening: bool = _opt(True, _bool,
        "Sandbox each server unit (ProtectSystem=, PrivateTmp=, ...).")
    ip_address_deny: tuple[str, ...] = _opt(["169.254.0.0/16", "fe80::/10"], _networks,
        "Addresses servers may not reach (IPAddressDeny=): link-local by default, where a "
        "cloud's metadata service (169.254.169.254) hands out the machine's credentials.")
    tmp_size: int = _opt("1G", parse_size,
        "Size of each server's own /tmp and /var/tmp (in memory, counted in its memory "
        "limit): one student cannot fill the disk the hub's database is on.")
    default_url: str = _opt("/tree", _url_path,
        "Page inside the user's server the browser opens first.")
    shared_paths: tuple[Path, ...] = _opt(["/srv/data"], _abs_paths,
        "Directories outside homes a server may write to, as file permissions allow.")
    environment: tuple[tuple[str, str], ...] = _opt({}, _environment,
        'Extra environment for every server, e.g. { LANG = "C.UTF-8" }.')
    debugger: bool = _opt(False, _bool,
        "Load the Python debugger (debugpy) in every server and kernel: JupyterLab's debugger "
        "panel needs it, the classic Notebook has none. Off saves about 20 MiB and 0.2 s of "
        "CPU per student.")
    jedi: bool = _opt(False, _bool,
        "Load jedi in every kernel for Tab completion that infers types (on a call's result, "
        "parameter names). Off, IPython still completes names, attributes, keys and paths, "
        "and each student needs about 5 MiB less.")


@dataclass(frozen=True)
class LimitsConfig:
    """Resources each user's server may use (systemd.resource-control(5))."""

    memory: int = _opt("1G", parse_size,
        'MemoryMax= per server: "512M", "1.5G" (K/M/G/T are powers of 1024).')
    cpu: float = _opt(1.0, _cores,
        "CPU cores per server (CPUQuota=, 100% per core).")
    tasks: int = _opt(512, _int(16),
        "TasksMax= per server: processes and threads.")


def _duration_or_off(value: object) -> float:
    """A duration, or "" / 0 for off (0.0)."""
    return 0.0 if value in ("", 0) else parse_duration(value)


@dataclass(frozen=True)
class CullerConfig:
    """Stopping servers nobody uses (files kept): no request, websocket message or busy kernel."""

    enabled: bool = _opt(True, _bool,
        "Stop servers that have been idle for idle_timeout.")
    idle_timeout: float = _opt("1h", parse_duration,
        "How long a server may sit idle before it is stopped.")
    max_age: float = _opt("", _duration_or_off,
        'Stop a server this long after it started, busy or not ("" = never).')
    every: float = _opt("5m", parse_duration,
        "How often servers are checked.")
    users_exempt: tuple[str, ...] = _opt([], _users,
        "Users whose servers are never stopped by the culler (e.g. the teacher).")


@dataclass(frozen=True)
class MetricsConfig:
    """/hub/metrics in Prometheus' format (JupyterHub's metric names)."""

    allow_loopback: bool = _opt(False, _bool,
        "Let anyone on this machine read /hub/metrics without a token (a local Prometheus); "
        "otherwise an administrator's token is needed.")


@dataclass(frozen=True)
class ProxyConfig:
    """The relay between browsers and users' servers."""

    max_message_size: int = _opt("64M", parse_size,
        "Largest websocket message relayed either way; a larger one closes both sides with "
        "code 1009.")
    upstream_connections: int = _opt(256, _int(1, 65536),
        "Connections the hub holds to one user's server, for requests and for websockets "
        "each; more wait.")


SECTIONS: dict[str, type] = {
    "hub": HubConfig, "auth": AuthConfig, "spawner": SpawnerConfig, "limits": LimitsConfig,
    "culler": CullerConfig, "metrics": MetricsConfig, "proxy": ProxyConfig}


def _or_inherit(parse: Callable[[object], Any]) -> Callable[[object], Any]:
    """A profile key left out (None) is taken from [limits] or [spawner] (profiles.py)."""
    return lambda value: None if value is None else parse(value)


@dataclass(frozen=True)
class ProfileConfig:
    """A server size or stack users may choose; keys left out come from [limits]/[spawner]."""

    description: str = _opt("", _string, "What the user reads beside the choice.")
    memory: int | None = _opt(None, _or_inherit(parse_size), "MemoryMax= (limits.memory).")
    cpu: float | None = _opt(None, _or_inherit(_cores), "CPU cores (limits.cpu).")
    tasks: int | None = _opt(None, _or_inherit(_int(16)), "TasksMax= (limits.tasks).")
    command: tuple[str, ...] | None = _opt(None, _or_inherit(_argv),
        "Server command line (spawner.command), e.g. a venv with JupyterLab.")
    environment: tuple[tuple[str, str], ...] = _opt({}, _environment,
        "Extra environment, added to spawner.environment.")
    default_url: str | None = _opt(None, _or_inherit(_url_path),
        "First page (spawner.default_url).")
    debugger: bool | None = _opt(None, _or_inherit(_bool),
        "Load debugpy, for JupyterLab's debugger (spawner.debugger).")
    jedi: bool | None = _opt(None, _or_inherit(_bool),
        "Load jedi, for completion that infers types (spawner.jedi).")
    groups: tuple[str, ...] = _opt([], _groups, "Unix groups who may choose it; [] = everyone.")
    default: bool = _opt(False, _bool, "Preselected (at most one profile).")


def _scopes(value: object) -> tuple[str, ...]:
    """A list of JupyterHub scopes, each one that exists (filters included)."""
    _expect(isinstance(value, list) and all(isinstance(v, str) for v in value),
            'expected a list of scopes like ["list:users", "read:servers"]')
    try:
        check_exist(value)
    except ScopeNotFound as e:
        raise _Bad(f"expected JupyterHub scopes ({' '.join(str(e).split())})") from None
    return tuple(value)


@dataclass(frozen=True)
class RoleConfig:
    """A role (JupyterHub's): scopes granted to the users and hub groups listed."""

    description: str = _opt("", _string, "What the role is for.")
    scopes: tuple[str, ...] = _opt([], _scopes, "JupyterHub scopes the role grants.")
    users: tuple[str, ...] = _opt([], _users, "Users who have the role.")
    groups: tuple[str, ...] = _opt([], _groups,
        "Hub groups whose members have the role (auth.sync_groups or made in the API).")
    services: tuple[str, ...] = _opt([], _list(_name("a service name"),
                                               "expected a list of service names"),
        "Services ([services.*]) that have the role.")


def _service_url(value: object) -> str:
    """A web service's address: a loopback http URL with a port, or unix:<absolute path>."""
    expected = ('expected "" (no web endpoint), a loopback URL like "http://127.0.0.1:10101" '
                'or a UNIX socket like "unix:/run/myservice/web.sock"')
    _expect(isinstance(value, str), expected)
    if value == "" or (value.startswith("unix:/") and "\0" not in value):
        return value
    m = re.fullmatch(r"http://(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[::1\]|localhost):(\d{1,5})/?",
                     value)
    _expect(m and 1 <= int(m[2]) <= 65535 and (m[1][0] != "1" or _is_ip(m[1])), expected)
    return value


def _is_ip(text: str) -> bool:
    """Whether text is an IP address."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


#: A token from the config: long enough not to be guessed (JupyterHub's are 32 hex digits).
_API_TOKEN = re.compile(r"[\x21-\x7e]{16,}")
_api_token = _check(lambda v: isinstance(v, str) and (v == "" or _API_TOKEN.fullmatch(v)),
                    'expected "" or a token of at least 16 printable ASCII characters without '
                    "blanks (e.g. from `openssl rand -hex 32`)")
_command = _list(_string, "expected a list of strings (the command line and its arguments)")


@dataclass(frozen=True)
class ServiceConfig:
    """A JupyterHub service: run by the hub (command) or external (api_token), optionally a
    web endpoint proxied at /services/<name>/."""

    command: tuple[str, ...] = _opt([], _command,
        "Command line the hub runs as a systemd unit; [] for an external service.")
    environment: tuple[tuple[str, str], ...] = _opt({}, _environment,
        "Extra environment for the command (never secrets: `systemctl show` prints it).")
    url: str = _opt("", _service_url,
        'Where the service answers HTTP: "http://127.0.0.1:<port>" or "unix:<socket path>"; '
        "the hub proxies /services/<name>/ there.")
    oauth: bool = _opt(False, _bool,
        "The service logs its users in through the hub (JupyterHub's HubOAuth).")
    scopes: tuple[str, ...] = _opt([], _scopes, "JupyterHub scopes the service's token holds.")
    roles: tuple[str, ...] = _opt([], _list(_name("a role name"), "expected a list of role names"),
        "Roles ([roles.*], or admin) the service has.")
    user: str = _opt("", _check(lambda v: isinstance(v, str) and (v == "" or _NAME.fullmatch(v)),
                                'expected a user name or "" (a DynamicUser= of its own)'),
        'Account the command runs as; "" = a throwaway one (systemd\'s DynamicUser=).')
    cwd: Path | None = _opt("", _opt_path,
        'Working directory (JupyterHub\'s cwd), e.g. the account\'s home; "" = '
        "/var/lib/notebook-appliance-service-<name>.")
    api_token: str = _opt("", _api_token,
        "The service's token, for an external service (the file must then not be readable "
        "by everyone); a managed one is given a fresh token.")


#: A role's name (JupyterHub's _role_name_pattern); the default roles are built in.
_ROLE_NAME = re.compile(r"[a-z][a-z0-9\-_~.]{1,253}[a-z0-9]")
_BUILTIN_ROLES = ("user", "admin", "server", "token")
#: Built-in roles a [roles.<name>] table may redefine the scopes of (JupyterHub's load_roles
#: lets the default roles' scopes be changed): `server`, the scopes of every server's token
#: (nbgrader's servers read their user's groups and the services with it).
_REDEFINABLE_ROLES = ("server",)


#: A service's name: it appears in URLs (/services/<name>/) and in its unit's name.
_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


#: A profile's name: it appears in URLs, forms and the store.
_PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")


@dataclass(frozen=True)
class Config:
    """The whole validated configuration; source is the file it came from ("" for defaults)."""

    hub: HubConfig
    auth: AuthConfig
    spawner: SpawnerConfig
    limits: LimitsConfig
    culler: CullerConfig
    metrics: MetricsConfig
    proxy: ProxyConfig
    #: [profiles.<name>] tables as (name, profile), in file order; () = [limits] is the one.
    profiles: tuple[tuple[str, ProfileConfig], ...] = ()
    #: [roles.<name>] tables as (name, role), in file order (JupyterHub's load_roles).
    roles: tuple[tuple[str, RoleConfig], ...] = ()
    #: [services.<name>] tables as (name, service), in file order.
    services: tuple[tuple[str, ServiceConfig], ...] = ()
    source: str = ""


# --- loading ------------------------------------------------------------------------------

def load(path: Path | str) -> Config:
    """Read and validate a TOML config file; raise ConfigError naming the file and key."""
    src = str(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{src}: no such file") from None
    except OSError as e:
        raise ConfigError(f"{src}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{src}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{src}: invalid TOML: {e}") from None
    config = _build(data, src)
    _check_secrets_private(config, src)
    return config


def defaults() -> Config:
    """The configuration with every key at its default."""
    return _build({}, "")


def _build(data: dict[str, Any], src: str) -> Config:
    """Validate parsed TOML into a Config."""
    _reject_unknown(data, {**SECTIONS, "profiles": None, "roles": None, "services": None},
                    src, "")
    sections = {}
    for name, cls in SECTIONS.items():
        sections[name] = _section(cls, name, _table(data, name, src), src)
    config = Config(**sections, profiles=_profiles(_table(data, "profiles", src), src),
                    roles=_roles(_table(data, "roles", src), src),
                    services=_services(_table(data, "services", src), src), source=src)
    _check_tls(config.hub, src)
    _check_lockout(config.auth, src)
    _check_service_roles(config, src)
    return config


def _table(data: dict[str, Any], name: str, src: str) -> dict[str, Any]:
    """data[name] when it is a table (or missing: empty); ConfigError otherwise."""
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{src}: {name}: expected a table [{name}], got {_toml(table)}")
    return table


def _named_tables(tables: dict[str, Any], prefix: str, cls: type, src: str,
                  name_problem: Callable[[str], str]) -> list[tuple[str, Any]]:
    """Every [<prefix>.<name>] table parsed into cls, in file order; ConfigError naming the
    key for a name name_problem() refuses (its words) or a value that is not a table."""
    parsed = []
    for name, table in tables.items():
        dotted = f"{prefix}.{_toml_key(name)}"
        if problem := name_problem(name):
            raise ConfigError(f"{src}: {dotted}: {problem}")
        if not isinstance(table, dict):
            raise ConfigError(f"{src}: {dotted}: expected a table [{dotted}], got "
                              f"{_toml(table)}")
        parsed.append((name, _section(cls, dotted, table, src)))
    return parsed


def _profiles(tables: dict[str, Any], src: str) -> tuple[tuple[str, ProfileConfig], ...]:
    """Every [profiles.<name>] table; names must be plain, at most one the default."""
    profiles = _named_tables(tables, "profiles", ProfileConfig, src, lambda name: "" if
                             _PROFILE_NAME.fullmatch(name) else
                             "expected a name of letters, digits, - and _ (up to 32, starting "
                             "with a letter or digit)")
    defaults = [name for name, p in profiles if p.default]
    if len(defaults) > 1:
        raise ConfigError(f"{src}: profiles.{defaults[1]}.default: expected only one profile "
                          f"with default = true, got {', '.join(defaults)}")
    return tuple(profiles)


def _role_name_problem(name: str) -> str:
    """Why name cannot name a [roles.<name>] table ("" if it can)."""
    if not _ROLE_NAME.fullmatch(name):
        return ("expected a role name of 3-255 lower-case letters, digits and -_~. starting "
                "with a letter")
    if name in _BUILTIN_ROLES and name not in _REDEFINABLE_ROLES:
        return (f"expected a new role's name (or {', '.join(_REDEFINABLE_ROLES)}, whose "
                f"scopes may be redefined), got the built-in role {name!r} (built in: "
                f"{', '.join(_BUILTIN_ROLES)})")
    return ""


def _roles(tables: dict[str, Any], src: str) -> tuple[tuple[str, RoleConfig], ...]:
    """Every [roles.<name>] table; JupyterHub's role names, none of the built-in ones but
    those whose scopes may be redefined, which then hold nothing but scopes (the server role
    is every server's, nobody is given it)."""
    roles = tuple(_named_tables(tables, "roles", RoleConfig, src, _role_name_problem))
    for name, role in roles:
        if name in _REDEFINABLE_ROLES:
            for key in ("users", "groups", "services"):
                if getattr(role, key):
                    raise ConfigError(f"{src}: roles.{name}.{key}: the built-in {name} role "
                                      f"is every server token's; only its scopes may be "
                                      f"set")
    return roles


def _services(tables: dict[str, Any], src: str) -> tuple[tuple[str, ServiceConfig], ...]:
    """Every [services.<name>] table; a name fit for a URL and a unit; OAuth only with a url
    (the browser comes back to /services/<name>/oauth_callback)."""
    services = tuple(_named_tables(tables, "services", ServiceConfig, src, lambda name: "" if
                                   _SERVICE_NAME.fullmatch(name) else
                                   "expected a service name of letters, digits, '.', '-' and "
                                   "'_' (up to 64, starting with a letter or digit)"))
    for name, service in services:
        if service.oauth and not service.url:
            raise ConfigError(f"{src}: services.{_toml_key(name)}.oauth: a service logs its "
                              "users in through the hub at /services/<name>/, so it needs a "
                              "url")
    return services


def _check_service_roles(config: "Config", src: str) -> None:
    """A service's roles exist, and a role's services are defined (JupyterHub's load_roles
    refuses both)."""
    roles = {name for name, _ in config.roles} | {"admin"}
    services = {name for name, _ in config.services}
    for name, service in config.services:
        for role in service.roles:
            if role not in roles:
                raise ConfigError(f"{src}: services.{_toml_key(name)}.roles: expected roles "
                                  f"defined in [roles.*] (or admin), got {_toml(role)}")
    for name, role in config.roles:
        for service in role.services:
            if service not in services:
                raise ConfigError(f"{src}: roles.{_toml_key(name)}.services: expected services "
                                  f"defined in [services.*], got {_toml(service)}")


def _check_secrets_private(config: "Config", src: str) -> None:
    """A file that holds a service's api_token must not be readable by every local user."""
    holders = [name for name, service in config.services if service.api_token]
    if holders and os.stat(src).st_mode & 0o004:
        raise ConfigError(f"{src}: services.{_toml_key(holders[0])}.api_token: the file holds "
                          "a token but every user of this machine can read it; run "
                          f"`chmod o-r {src}` (root reads it)")


def _section(cls: type, name: str, table: dict[str, Any], src: str) -> Any:
    """Parse one [section] table into its dataclass."""
    specs = {f.name: f.metadata for f in fields(cls)}
    _reject_unknown(table, specs, src, f"{name}.")
    values = {}
    for key, meta in specs.items():
        value = table.get(key, meta["default"])
        try:
            values[key] = meta["parse"](value)
        except _Bad as bad:
            got = value if bad.got is _UNSET else bad.got
            dotted = f"{name}.{key}" + (f".{bad.subkey}" if bad.subkey else "")
            raise ConfigError(f"{src}: {dotted}: {bad.expected}, got {_toml(got)}") from None
    return cls(**values)


def _reject_unknown(table: dict[str, Any], known: dict[str, Any], src: str, prefix: str) -> None:
    """Raise ConfigError for the first key of table that is not in known."""
    for key in table:
        if key not in known:
            what = "section" if not prefix else "key"
            raise ConfigError(f"{src}: {prefix}{_toml_key(key)}: unknown {what}, "
                              f"expected one of: {', '.join(known)}")


def _check_lockout(auth: AuthConfig, src: str) -> None:
    """The longest lockout is not shorter than the first."""
    if auth.lockout_max < auth.lockout:
        raise ConfigError(f"{src}: auth.lockout_max: expected at least auth.lockout "
                          f"({format_duration(auth.lockout)}), got "
                          f"{format_duration(auth.lockout_max)}")


def _check_tls(hub: HubConfig, src: str) -> None:
    """Both ssl_cert and ssl_key, or neither."""
    if bool(hub.ssl_cert) != bool(hub.ssl_key):
        missing, present = ("ssl_key", "ssl_cert") if hub.ssl_cert else ("ssl_cert", "ssl_key")
        raise ConfigError(f'{src}: hub.{missing}: expected a path because hub.{present} is set, '
                          f'got ""')


# --- writing and display -------------------------------------------------------------------

_HEADER = """\
# notebook-appliance configuration, read once when the service starts.
# Every key is listed with its default value; edit a line to change it.
# Sizes: "512M", "1.5G" (K, M, G, T are powers of 1024). Durations: "90s", "15m", "1h30m", "14d".
# A bad value or an unknown key stops the service with a message naming it."""


def generate() -> str:
    """TOML text with every key at its default, each under a one-line comment."""
    lines = [_HEADER]
    for name, cls in SECTIONS.items():
        lines += ["", f"# {cls.__doc__}", f"[{name}]"]
        for f in fields(cls):
            lines += [f"# {f.metadata['help']}", f"{f.name} = {_toml(f.metadata['default'])}"]
    return "\n".join(lines) + "\n" + _PROFILES_EXAMPLE


_PROFILES_EXAMPLE = """
# Profiles (optional): servers users choose from on the spawn page ("user_options" in the
# API). Without any, [limits] and [spawner] above are the one profile. Keys left out of a
# profile come from [limits] and [spawner]; groups limits who may choose it. A user in several
# groups may choose every profile any of them allows, and gets the largest by default when
# the default profile is not theirs.
#
# [profiles.standard]
# description = "Standard: 1 GiB, 1 core"
# default = true
#
# [profiles.large]
# description = "Large: 4 GiB, 2 cores, for the research group"
# memory = "4G"
# cpu = 2
# groups = ["research"]

# Roles (optional, JupyterHub's): scopes for users and hub groups, beside the built-in roles
# (user: their own things; admin: auth.admin_group and auth.admin_users; token; server).
# A token is made with scopes its owner holds, e.g. for jupyterhub-idle-culler:
#
# [roles.culler]
# description = "Cull idle servers"
# scopes = ["list:users", "read:users:activity", "read:servers", "delete:servers"]
# users = ["teacher"]
#
# The built-in server role's scopes (every server's token) may be redefined, e.g. so that
# nbgrader's extensions read their user's groups and the services (README, "Works with"):
#
# [roles.server]
# scopes = ["users:activity!user", "access:servers!server", "read:users:groups!user",
#           "list:services", "read:services"]

# Services (optional, JupyterHub's): programs that use the hub's API with a token of their
# own. With a command the hub runs one as the unit notebook-appliance-service-<name>.service
# (restarted when it fails, left running across hub restarts, stopped when removed from
# here), with JupyterHub's JUPYTERHUB_* environment; the token never shows in `systemctl
# show`. With a url it is reached at /services/<name>/. E.g. jupyterhub-idle-culler
# (pip install jupyterhub-idle-culler into /opt/culler):
#
# [services.idle-culler]
# command = ["/opt/culler/bin/python3", "-m", "jupyterhub_idle_culler", "--timeout=3600"]
#
# [roles.idle-culler]
# scopes = ["list:users", "read:users:activity", "read:servers", "delete:servers"]
# services = ["idle-culler"]
#
# A service may run as an account (user = "grader-course101", its files its own) in a
# directory of its own (cwd = "/home/grader-course101"), as nbgrader's formgrader does.
#
# An external service (started by someone else) gets its token here instead; the file must
# then not be readable by everyone (chmod o-r):
#
# [services.stats]
# url = "http://127.0.0.1:10101"
# api_token = "<from openssl rand -hex 32>"
"""


def _toml_key(key: str) -> str:
    """A TOML key, quoted unless bare."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml(value: object) -> str:
    """A value written as TOML (also used to show bad values in error messages)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml, value)) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(k)} = {_toml(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    return repr(value) if isinstance(value, int | float) else str(value)


def format_size(n: int) -> str:
    """Bytes for display: 1073741824 -> "1 GiB", 1610612736 -> "1.5 GiB"."""
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= factor:
            return f"{round(n / factor, 1):g} {unit}"
    return f"{n} B"


def format_duration(seconds: float) -> str:
    """Seconds in the config's notation: 5400 -> "1h30m", 1209600 -> "14d"."""
    parts, rest = [], seconds
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{int(count)}{unit}")
    if rest or not parts:
        parts.append(f"{rest:g}s")
    return "".join(parts)
