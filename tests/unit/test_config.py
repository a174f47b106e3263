"""Tests for appliance.config: defaults, a full file, every kind of bad value, generate()."""

import dataclasses
import ipaddress
import tomllib
from pathlib import Path

import pytest

from appliance import config
from appliance.errors import ConfigError

SHIPPED = Path(__file__).parents[2] / "etc" / "notebook-appliance" / "appliance.toml"

FULL = """\
[hub]
listen = "::"
port = 8443
state_dir = "/srv/state"
runtime_dir = "/run/nb"
session_max_age = "1h30m"
ssl_cert = "/etc/ssl/nb.pem"
ssl_key = "/etc/ssl/private/nb.key"
trusted_proxies = ["127.0.0.1", "10.0.0.0/8", "::1"]
header_timeout = "30s"
max_connections_per_address = 500

[auth]
pam_service = "login"
min_uid = 2000
allowed_groups = ["students", "staff"]
admin_group = ""
admin_users = ["alice"]
manage_accounts = true
pam_threads = 8
pam_queue = 0
lookup_threads = 1
max_failures = 3
max_failures_per_address = 50
lockout = "30s"
lockout_max = "1h"

[spawner]
command = ["python3", "-m", "jupyter_server"]
start_timeout = 60
stop_timeout = "1m"
concurrent_spawns = 8
admission = "limits"
restart_cooldown = "10s"
slice = "jupyter-users.slice"
hardening = false
default_url = "/lab"
shared_paths = ["/srv/data", "/srv/scratch"]
environment = { LANG = "C.UTF-8", PIP_INDEX_URL = "http://mirror/simple" }
debugger = true
jedi = true

[limits]
memory = "1.5G"
cpu = 2
tasks = 1024

[proxy]
max_message_size = "16M"
upstream_connections = 64
"""


def write(tmp_path: Path, text: str) -> Path:
    """Write text as appliance.toml in tmp_path and return its path."""
    path = tmp_path / "appliance.toml"
    path.write_text(text)
    return path


def test_defaults():
    c = config.defaults()
    assert c.source == ""
    assert c.hub == config.HubConfig(
        listen="0.0.0.0", port=8000, state_dir=Path("/var/lib/notebook-appliance"),
        runtime_dir=Path("/run/notebook-appliance"), session_max_age=14 * 86400.0,
        ssl_cert=None, ssl_key=None, redirect_port=0, trusted_proxies=(), user_domain="",
        header_timeout=15.0, max_connections_per_address=3000)
    assert c.auth == config.AuthConfig(
        pam_service="notebook-appliance", min_uid=1000, allowed_groups=(),
        admin_group="notebook-admins", admin_users=(), admin_access=False, sync_groups=(),
        manage_accounts=False, recheck_every=60.0, pam_threads=4, pam_queue=500,
        lookup_threads=2, max_failures=5, max_failures_per_address=50, lockout=60.0,
        lockout_max=900.0)
    assert c.spawner == config.SpawnerConfig(
        command=("jupyter-notebook",), start_timeout=120.0, stop_timeout=30.0,
        concurrent_spawns=4, admission="usage", named_servers_limit=0,
        restart_cooldown=2.0,
        slice="notebook-appliance.slice", hardening=True,
        ip_address_deny=("169.254.0.0/16", "fe80::/10"), tmp_size=1024**3, default_url="/tree",
        shared_paths=(Path("/srv/data"),), environment=(), debugger=False, jedi=False)
    assert c.limits == config.LimitsConfig(memory=1024**3, cpu=1.0, tasks=512)
    assert c.proxy == config.ProxyConfig(max_message_size=64 * 1024**2,
                                         upstream_connections=256)


def test_config_is_frozen_and_hashable():
    c = config.defaults()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.hub.port = 1  # type: ignore[misc]
    assert hash(c) == hash(config.defaults())


def test_empty_file_is_defaults(tmp_path):
    path = write(tmp_path, "")
    assert config.load(path) == dataclasses.replace(config.defaults(), source=str(path))


def test_full_file(tmp_path):
    path = write(tmp_path, FULL)
    c = config.load(str(path))
    assert c.source == str(path)
    assert c.hub == config.HubConfig(
        listen="::", port=8443, state_dir=Path("/srv/state"), runtime_dir=Path("/run/nb"),
        session_max_age=5400.0, ssl_cert=Path("/etc/ssl/nb.pem"),
        ssl_key=Path("/etc/ssl/private/nb.key"), redirect_port=0,
        trusted_proxies=(ipaddress.ip_network("127.0.0.1"), ipaddress.ip_network("10.0.0.0/8"),
                         ipaddress.ip_network("::1")), user_domain="", header_timeout=30.0,
        max_connections_per_address=500)
    assert c.auth == config.AuthConfig(
        pam_service="login", min_uid=2000, allowed_groups=("students", "staff"),
        admin_group="", admin_users=("alice",), admin_access=False, sync_groups=(),
        manage_accounts=True,
        recheck_every=60.0,
        pam_threads=8, pam_queue=0, lookup_threads=1, max_failures=3,
        max_failures_per_address=50, lockout=30.0, lockout_max=3600.0)
    assert c.spawner == config.SpawnerConfig(
        command=("python3", "-m", "jupyter_server"), start_timeout=60.0, stop_timeout=60.0,
        concurrent_spawns=8, admission="limits", named_servers_limit=0,
        restart_cooldown=10.0,
        slice="jupyter-users.slice", hardening=False,
        ip_address_deny=("169.254.0.0/16", "fe80::/10"), tmp_size=1024**3, default_url="/lab",
        shared_paths=(Path("/srv/data"), Path("/srv/scratch")),
        environment=(("LANG", "C.UTF-8"), ("PIP_INDEX_URL", "http://mirror/simple")),
        debugger=True, jedi=True)
    assert c.limits == config.LimitsConfig(memory=3 * 512 * 1024**2, cpu=2.0, tasks=1024)
    assert c.proxy == config.ProxyConfig(max_message_size=16 * 1024**2, upstream_connections=64)
    assert dict(c.spawner.environment)["LANG"] == "C.UTF-8"


BAD = [
    ("[hub]\nuser_domain = 'Box.Example'",
     'hub.user_domain: expected a lower-case DNS name like "box.example" (or "" for off), '
     'got "Box.Example"'),
    ("[spawner]\nip_address_deny = ['x']", 'spawner.ip_address_deny: expected a list of address '
     'ranges like ["169.254.0.0/16"], got ["x"]'),
    ("[limits]\nmemory = 'lots'", 'limits.memory: expected a size like "2G", got "lots"'),
    ("[limits]\nmemory = '2GB'", 'limits.memory: expected a size like "2G", got "2GB"'),
    ("[limits]\nmemory = true", 'limits.memory: expected a size like "2G", got true'),
    ("[limits]\ncpu = -1.5", "limits.cpu: expected a number of cores > 0 like 1.5, got -1.5"),
    ("[limits]\ncpu = nan", "limits.cpu: expected a number of cores > 0 like 1.5, got nan"),
    ("[limits]\ntasks = 8", "limits.tasks: expected an integer >= 16, got 8"),
    ("[hub]\nport = 70000", "hub.port: expected an integer from 1 to 65535, got 70000"),
    ("[hub]\nport = '80'", 'hub.port: expected an integer from 1 to 65535, got "80"'),
    ("[hub]\nlisten = 'localhost'",
     'hub.listen: expected an IP address like "0.0.0.0" or "::", got "localhost"'),
    ("[auth]\nmin_uid = 0",
     "auth.min_uid: expected a uid >= 1 (0 would let root log in), got 0"),
    ("[auth]\npam_threads = 0", "auth.pam_threads: expected an integer from 1 to 64, got 0"),
    ("[auth]\nmax_failures = 0", "auth.max_failures: expected an integer from 1 to 1000, got 0"),
    ("[auth]\nlockout = '10m'\nlockout_max = '5m'",
     "auth.lockout_max: expected at least auth.lockout (10m), got 5m"),
    ("[hub]\ntrusted_proxies = ['nginx']",
     'hub.trusted_proxies: expected an address or network like "127.0.0.1" or "10.0.0.0/8", '
     'got ["nginx"]'),
    ("[hub]\ntrusted_proxies = '127.0.0.1'",
     'hub.trusted_proxies: expected a list like ["127.0.0.1", "10.0.0.0/8"], got "127.0.0.1"'),
    ("[hub]\nstate_dir = 'var/lib/x'",
     'hub.state_dir: expected an absolute path, got "var/lib/x"'),
    ("[hub]\nprot = 8000",
     "hub.prot: unknown key, expected one of: listen, port, state_dir, runtime_dir, "
     "session_max_age, ssl_cert, ssl_key, redirect_port, trusted_proxies, user_domain, "
     "header_timeout, max_connections_per_address"),
    ("[hub]\nheader_timeout = 'soon'",
     'hub.header_timeout: expected a duration like "90s", "15m" or "1h30m", got "soon"'),
    ("[hub]\nmax_connections_per_address = 0",
     "hub.max_connections_per_address: expected an integer >= 1, got 0"),
    ("[proxy]\nmax_message_size = 0",
     'proxy.max_message_size: expected a size like "2G", got 0'),
    ("[profiles.big]\nmemory = 'lots'",
     'profiles.big.memory: expected a size like "2G", got "lots"'),
    ("[profiles.big]\nsize = 3",
     "profiles.big.size: unknown key, expected one of: description, memory, cpu, tasks, "
     "command, environment, default_url, debugger, jedi, groups, default"),
    ("[profiles.\"a b\"]\ncpu = 1",
     'profiles."a b": expected a name of letters, digits, - and _ (up to 32, starting with '
     "a letter or digit)"),
    ("[profiles.a]\ndefault = true\n[profiles.b]\ndefault = true",
     "profiles.b.default: expected only one profile with default = true, got a, b"),
    ("[spawner]\nnamed_servers_limit = -1",
     "spawner.named_servers_limit: expected an integer from 0 to 100, got -1"),
    ("[hubb]\nport = 8000",
     "hubb: unknown section, expected one of: hub, auth, spawner, limits, culler, metrics, "
     "proxy, profiles, roles, services"),
    ("[services.cull]\ncommand = 'c'",
     "services.cull.command: expected a list of strings (the command line and its arguments), "
     "got \"c\""),
    ("[services.cull]\nurl = 'http://10.0.0.1:80'",
     'services.cull.url: expected "" (no web endpoint), a loopback URL like '
     '"http://127.0.0.1:10101" or a UNIX socket like "unix:/run/myservice/web.sock", got '
     '"http://10.0.0.1:80"'),
    ("[services.'a/b']",
     "services.\"a/b\": expected a service name of letters, digits, '.', '-' and '_' (up to "
     "64, starting with a letter or digit)"),
    ("[services.cull]\nroles = ['nope']",
     'services.cull.roles: expected roles defined in [roles.*] (or admin), got "nope"'),
    ("[roles.culler]\nservices = ['nope']",
     'roles.culler.services: expected services defined in [services.*], got "nope"'),
    ("[roles.admin]\nscopes = ['read:hub']",
     "roles.admin: expected a new role's name (or server, whose scopes may be redefined), "
     "got the built-in role 'admin' (built in: user, admin, server, token)"),
    ("[roles.server]\nscopes = ['inherit']\nusers = ['alice']",
     "roles.server.users: the built-in server role is every server token's; only its "
     "scopes may be set"),
    ("[services.fg]\ncommand = ['c']\ncwd = 'home/grader'",
     'services.fg.cwd: expected an absolute path or "", got "home/grader"'),
    ("[services.cull]\nscopes = ['read:everything']",
     "services.cull.scopes: expected JupyterHub scopes (Scope 'read:everything' does not "
     'exist), got ["read:everything"]'),
    ("[services.cull]\napi_token = 'short'",
     'services.cull.api_token: expected "" or a token of at least 16 printable ASCII '
     'characters without blanks (e.g. from `openssl rand -hex 32`), got "short"'),
    ("hub = 3", "hub: expected a table [hub], got 3"),
    ("[auth]\nallowed_groups = 'staff'",
     'auth.allowed_groups: expected a list of group names, got "staff"'),
    ("[auth]\nadmin_users = ['alice', 'bob smith']",
     'auth.admin_users: expected a list of user names, got ["alice", "bob smith"]'),
    ("[spawner]\nshared_paths = ['srv/data']",
     'spawner.shared_paths: expected a list of absolute paths, got ["srv/data"]'),
    ("[spawner]\ncommand = []", "spawner.command: expected a non-empty list of strings, got []"),
    ("[spawner]\ncommand = ['python3', 3]",
     'spawner.command: expected a non-empty list of strings, got ["python3", 3]'),
    ("[spawner]\nenvironment = { 1BAD = 'x' }",
     "spawner.environment.1BAD: expected a variable name of letters, digits and _ "
     'not starting with a digit, got "1BAD"'),
    ("[spawner]\nenvironment = { 'MY VAR' = 'x' }",
     'spawner.environment."MY VAR": expected a variable name of letters, digits and _ '
     'not starting with a digit, got "MY VAR"'),
    ("[spawner]\nenvironment = { N = 3 }", "spawner.environment.N: expected a string, got 3"),
    ("[spawner]\nenvironment = ['A=b']",
     'spawner.environment: expected a table like { LANG = "C.UTF-8" }, got ["A=b"]'),
    ("[spawner]\nstart_timeout = 'soon'",
     'spawner.start_timeout: expected a duration like "90s", "15m" or "1h30m", got "soon"'),
    ("[spawner]\nstop_timeout = 0",
     'spawner.stop_timeout: expected a duration like "90s", "15m" or "1h30m", got 0'),
    ("[spawner]\nconcurrent_spawns = 0",
     "spawner.concurrent_spawns: expected an integer from 1 to 1000, got 0"),
    ("[spawner]\nadmission = 'free'",
     'spawner.admission: expected "usage" or "limits", got "free"'),
    ("[spawner]\nslice = 'users'",
     'spawner.slice: expected a slice unit name like "notebook-appliance.slice", got "users"'),
    ("[spawner]\nhardening = 'yes'", 'spawner.hardening: expected true or false, got "yes"'),
    ("[spawner]\ndefault_url = 'tree'",
     'spawner.default_url: expected a URL path starting with "/", got "tree"'),
    ("[hub]\nssl_cert = '/etc/ssl/a.pem'",
     'hub.ssl_key: expected a path because hub.ssl_cert is set, got ""'),
    ("[hub]\nssl_key = '/etc/ssl/a.key'",
     'hub.ssl_cert: expected a path because hub.ssl_key is set, got ""'),
    ("[services.stats]\ncommand = ['stats']\noauth = true",
     "services.stats.oauth: a service logs its users in through the hub at /services/<name>/, "
     "so it needs a url"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_value_names_file_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(info.value) == f"{path}: {message}"


def test_a_file_with_a_service_token_must_not_be_world_readable(tmp_path):
    path = write(tmp_path, '[services.ext]\napi_token = "0123456789abcdef0123"\n')
    path.chmod(0o644)
    with pytest.raises(ConfigError) as e:
        config.load(path)
    assert str(e.value) == (f"{path}: services.ext.api_token: the file holds a token but every "
                            f"user of this machine can read it; run `chmod o-r {path}` (root "
                            "reads it)")
    path.chmod(0o640)
    assert dict(config.load(path).services)["ext"].api_token == "0123456789abcdef0123"


def test_toml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "[hub]\nport = 8000\nlisten = \n")
    with pytest.raises(ConfigError, match=r"appliance\.toml: invalid TOML: .*line 3"):
        config.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"/nope\.toml: no such file$"):
        config.load(tmp_path / "nope.toml")


def test_not_utf8(tmp_path):
    path = tmp_path / "appliance.toml"
    path.write_bytes(b"[hub]\nlisten = '\xff'\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        config.load(path)


@pytest.mark.parametrize(("text", "size"), [
    ("512M", 512 * 1024**2), ("1G", 1024**3), ("1.5G", 3 * 512 * 1024**2),
    ("2048K", 2 * 1024**2), ("2GiB", 2 * 1024**3), ("1T", 1024**4), (4096, 4096)])
def test_parse_size(text, size):
    assert config.parse_size(text) == size


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30.0), ("15m", 900.0), ("8h", 28800.0), ("14d", 1209600.0), ("1h30m", 5400.0),
    (45, 45.0), (0.5, 0.5), ("1.5m", 90.0)])
def test_parse_duration(text, seconds):
    assert config.parse_duration(text) == seconds


def test_format_helpers():
    assert config.format_size(1024**3) == "1 GiB"
    assert config.format_size(3 * 512 * 1024**2) == "1.5 GiB"
    assert config.format_size(512 * 1024**2) == "512 MiB"
    assert config.format_size(100) == "100 B"
    assert config.format_duration(1209600) == "14d"
    assert config.format_duration(5400) == "1h30m"
    assert config.format_duration(0.5) == "0.5s"
    for seconds in (1, 59, 61, 3600, 86401, 123456):
        assert config.parse_duration(config.format_duration(seconds)) == seconds


def test_generate_round_trips(tmp_path):
    text = config.generate()
    path = write(tmp_path, text)
    assert config.load(path) == dataclasses.replace(config.defaults(), source=str(path))


def test_generate_lists_every_key_under_a_comment():
    text = config.generate()
    data = tomllib.loads(text)
    lines = text.splitlines()
    for name, cls in config.SECTIONS.items():
        keys = [f.name for f in dataclasses.fields(cls)]
        assert list(data[name]) == keys
        for key in keys:
            line = next(i for i, line in enumerate(lines) if line.startswith(f"{key} = "))
            assert lines[line - 1].startswith("# ")


def test_shipped_file_is_generated():
    assert SHIPPED.read_text() == config.generate()
    assert config.load(SHIPPED) == dataclasses.replace(config.defaults(), source=str(SHIPPED))
