"""What a user's notebook unit looks like: its name, paths and properties, as plain data.

Pure functions, tested without a bus; systemd.py turns the triples into D-Bus variants.
Property names and types: org.freedesktop.systemd1(5); meanings: systemd.exec(5),
systemd.service(5), systemd.resource-control(5).
"""

import ipaddress
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from appliance import hubenv, serviceunits
from appliance.config import Config
from appliance.profiles import Profile
from appliance.systemd import Property, escape_unit_part

#: The Jupyter config every server loads: it reads the token from a file, see its docstring.
JUPYTER_CONFIG = Path(__file__).with_name("jupyter_config.py")
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
#: Every server starts through this wrapper, which puts the token file's contents into
#: $JUPYTERHUB_API_TOKEN and execs the command: JupyterHub's tools read the token there, and
#: a unit's Environment= is readable by anyone (`systemctl show`). Debian's python3 with -I:
#: nothing from the user's environment or the hub is imported on the way.
SECRETENV = Path(__file__).with_name("secretenv.py")
WRAPPER_PYTHON = "/usr/bin/python3"
#: Kernel connection files and sockets, in each server's own /tmp (hardening's tmpfs).
KERNEL_RUNTIME_DIR = "/tmp/jupyter-runtime"
#: Servers' nice(2) value: the hub (0) and the system are scheduled first when CPUs are busy.
SERVER_NICE = 5
#: Directories of modules that cannot be imported, put on a server's PYTHONPATH so Jupyter
#: takes the path it takes where they are not installed (each stand-in's docstring says what
#: it saves and what is lost):
#: - debugpy, unless the profile has `debugger`: ipykernel 6 imports it (and through it pydevd
#:   and pkg_resources) in the kernel and, to write the kernelspec's metadata, in the notebook
#:   server too: about 10 MiB and 0.1 s of CPU in each, for a panel only JupyterLab has;
#: - jedi, unless the profile has `jedi`: IPython completes on its own without it;
#: - gi, always: send2trash trashes files without GLib just as well.
STANDINS = Path(__file__).with_name("standins")
#: In the environment of a jupyterhub-singleuser server (jupyter_config.py reads it; the
#: hub reads it back from an adopted unit: how the server was started, whatever the config
#: says now).
HUB_OAUTH_VARIABLE = "APPLIANCE_HUB_OAUTH"
#: What a URL path segment keeps unquoted (RFC 3986 pchar): the proxy's normalised paths and
#: servers' base URLs quote alike, so they match.
SEGMENT_SAFE = ":@!$&'()*+,;=-._~"


@dataclass(frozen=True)
class ServerPaths:
    """Where one server's socket and token live: a directory only its user can enter."""

    directory: Path
    socket: Path
    token_file: Path

    @classmethod
    def for_user(cls, runtime_dir: Path, user: str, server: str = "") -> "ServerPaths":
        """Paths under <runtime_dir>/users/<user>[:<server>]/ (user names never hold '/')."""
        directory = runtime_dir / "users" / (f"{user}:{server}" if server else user)
        return cls(directory, directory / "notebook.sock", directory / "token")


def unit_name(user: str, server: str = "") -> str:
    """notebook-<user>.service, or notebook-<user>:<server>.service for a named server."""
    suffix = f":{escape_unit_part(server)}" if server else ""
    return f"notebook-{escape_unit_part(user)}{suffix}.service"


def base_url(user: str, server: str = "") -> str:
    """The URL prefix of a server, as JupyterHub lays them out; a name outside URL-safe
    ASCII percent-encoded (RFC 3986), as browsers send it."""
    user, server = quote_segment(user), quote_segment(server)
    return f"/user/{user}/{server + '/' if server else ''}"


def quote_segment(text: str) -> str:
    """One path segment, percent-encoded as browsers and the proxy write it."""
    return quote(text, safe=SEGMENT_SAFE)


@dataclass(frozen=True)
class Owner:
    """The OS account a unit runs as."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str


def unit_properties(cfg: Config, profile: Profile, owner: Owner, paths: ServerPaths,
                    url: str, hub_url: str = "", server: str = "") -> list[Property]:
    """Every property of a notebook server's transient service (server: its name, "" for
    the default one; hub_url: where it reaches the hub's API).

    Size and stack come from the frozen profile alone; cfg gives what every server shares
    (slice, stop timeout, sandbox, shared paths).
    """
    argv = [WRAPPER_PYTHON, "-I", str(SECRETENV),
            f"{hubenv.TOKEN_VARIABLE}={paths.token_file}", "--",
            *profile.command, f"--config={JUPYTER_CONFIG}"]
    props = [
        ("Description", "s", f"Jupyter notebook server of {owner.name}"),
        # exec: the start job fails at once if the command cannot be executed.
        ("Type", "s", "exec"),
        # The uid, not the name: systemd reads an all-digit User= as a uid, so an account
        # named "1001" would otherwise run as whoever has uid 1001 (systemd.exec(5)).
        ("User", "s", str(owner.uid)),
        ("Group", "s", str(owner.gid)),
        ("WorkingDirectory", "s", owner.home),
        ("ExecStart", "a(sasb)", [[argv[0], argv, False]]),
        ("Environment", "as", environment(profile, owner, paths, url,
                                          private_tmp=cfg.spawner.hardening)
         + jupyterhub_environment(cfg, profile, owner.name, server, url, hub_url)),
        ("Slice", "s", cfg.spawner.slice),
        ("TimeoutStopUSec", "t", int(cfg.spawner.stop_timeout * 1e6)),
    ]
    return props + limit_properties(profile) + (hardening_properties(cfg, owner, paths)
                                                if cfg.spawner.hardening else [])


def environment(profile: Profile, owner: Owner, paths: ServerPaths, url: str,
                private_tmp: bool = True) -> list[str]:
    """The server's environment: no secrets here, `systemctl show` prints it to anyone."""
    env = {
        "HOME": owner.home, "USER": owner.name, "LOGNAME": owner.name, "SHELL": owner.shell,
        "PATH": SAFE_PATH, "LANG": "C.UTF-8",
        "APPLIANCE_SOCKET": str(paths.socket), "APPLIANCE_TOKEN_FILE": str(paths.token_file),
        "APPLIANCE_BASE_URL": url, "APPLIANCE_DEFAULT_URL": profile.default_url,
        # Jupyter's runtime files (kernel connection files) stay in the private directory.
        "JUPYTER_RUNTIME_DIR": str(paths.directory / "runtime"),
    }
    if hubenv.speaks_hub_oauth(profile.command):
        # jupyterhub-singleuser logs browsers in through the hub's OAuth and checks tokens
        # with the hub itself: jupyter_config.py then leaves its token and password alone.
        env[HUB_OAUTH_VARIABLE] = "1"
    if private_tmp:
        # Kernels talk to their server over UNIX sockets in the unit's own /tmp instead of
        # TCP ports on 127.0.0.1: with 220 kernels starting at once, jupyter_client's
        # pick-a-free-port-then-let-the-kernel-bind raced across users (3 of 220 kernels
        # died with "Address already in use" in the classroom bench), and no other local
        # user can even reach the sockets. The short path keeps them under sun_path's 108.
        env["JUPYTER_RUNTIME_DIR"] = KERNEL_RUNTIME_DIR
        env["APPLIANCE_KERNEL_TRANSPORT"] = "ipc"
    if sys.version_info < (3, 12):
        # Python 3.11 still has distutils; without this, the first `import distutils` (the
        # notebook server makes one) goes through setuptools' shim and loads setuptools and
        # pkg_resources: 6 MiB and 0.1 s of CPU per server, measured (setuptools' documented
        # switch; Python 3.12 has no distutils of its own, so there it is left alone).
        env["SETUPTOOLS_USE_DISTUTILS"] = "stdlib"
    env.update(dict(profile.environment))
    env["PYTHONPATH"] = ":".join([*map(str, standins(profile)),
                                  *filter(None, [env.get("PYTHONPATH")])])
    return [f"{k}={v}" for k, v in env.items()]


def standins(profile: Profile) -> list[Path]:
    """The stand-in directories (STANDINS) a server of this profile runs with."""
    left_out = ["gi"] + ["debugpy"] * (not profile.debugger) + ["jedi"] * (not profile.jedi)
    return [STANDINS / name for name in left_out]


def jupyterhub_environment(cfg: Config, profile: Profile, user: str, server: str, url: str,
                           hub_url: str) -> list[str]:
    """JupyterHub's variables (Spawner.get_env, hubenv.py), after the profile's own: they
    win. The token is not among them (secretenv.py adds it as the server starts)."""
    env = {**hubenv.environment(user, server, url, hub_url),
           **hubenv.server_facts(profile.default_url, profile.memory, profile.cpu,
                                 cfg.auth.admin_access)}
    return [f"{k}={v}" for k, v in env.items()]


def limit_properties(profile: Profile) -> list[Property]:
    """cgroup limits of the profile (systemd.resource-control(5))."""
    return [
        ("MemoryAccounting", "b", True),
        ("MemoryMax", "t", profile.memory),
        # Swap off: a server over its limit is stopped, not left thrashing the disk.
        ("MemorySwapMax", "t", 0),
        ("CPUAccounting", "b", True),
        ("CPUQuotaPerSecUSec", "t", int(profile.cpu * 1_000_000)),
        # Under contention the hub answers first: with cgroup v2 the slice's CPUWeight= says
        # so; where the cpu controller is not ours (cgroup v1, a container) only nice does.
        ("Nice", "i", SERVER_NICE),
        ("TasksAccounting", "b", True),
        ("TasksMax", "t", profile.tasks),
        # continue: the kernel's OOM killer ends the biggest process (usually a kernel);
        # the notebook server itself survives and the user can restart the kernel.
        ("OOMPolicy", "s", "continue"),
    ]


def hardening_properties(cfg: Config, owner: Owner, paths: ServerPaths) -> list[Property]:
    """Sandboxing (systemd.exec(5)); `systemd-analyze security` goes from 9.2 to about 2."""
    return [
        ("NoNewPrivileges", "b", True),
        # Its own /tmp and /var/tmp, capped tmpfs (charged to its memory): a full /tmp
        # cannot fill the disk the hub's database is on. Private, as PrivateTmp= would be.
        ("TemporaryFileSystem", "a(ss)",
         [[d, f"size={cfg.spawner.tmp_size},mode=1777,nosuid,nodev"]
          for d in ("/tmp", "/var/tmp")]),
        ("PrivateDevices", "b", True),
        # Other users' processes are invisible in /proc (their command lines, environment).
        ("ProtectProc", "s", "invisible"),
        ("ProtectSystem", "s", "strict"),
        # Other users' homes are hidden: an empty tmpfs on /home with only this one bound in.
        ("ProtectHome", "s", "tmpfs"),
        ("BindPaths", "a(ssbt)", [[owner.home, owner.home, False, 0]]),
        # Shared data (/srv/data) stays writable to whom its permissions allow (instructors);
        # "-": a path that does not exist is skipped rather than failing the start.
        ("ReadWritePaths", "as", [owner.home, str(paths.directory)]
         + [f"-{p}" for p in cfg.spawner.shared_paths]),
        ("ProtectKernelTunables", "b", True),
        ("ProtectKernelModules", "b", True),
        ("ProtectKernelLogs", "b", True),
        ("ProtectControlGroups", "b", True),
        ("ProtectClock", "b", True),
        ("ProtectHostname", "b", True),
        ("RestrictSUIDSGID", "b", True),
        ("RestrictRealtime", "b", True),
        # 0 = no namespace types may be created (RestrictNamespaces=yes).
        ("RestrictNamespaces", "t", 0),
        ("LockPersonality", "b", True),
        ("CapabilityBoundingSet", "t", 0),
        ("AmbientCapabilities", "t", 0),
        ("SystemCallArchitectures", "as", ["native"]),
        # @system-service keeps what kernels need (libzmq calls sched_setscheduler, which
        # ~@resources would kill). MemoryDenyWriteExecute is left out: it breaks JITs
        # (numba, JAX) that students use.
        ("SystemCallFilter", "(bas)", [True, ["@system-service"]]),
        ("RestrictAddressFamilies", "(bas)",
         [True, ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"]]),
        ("IPAddressDeny", "a(iayu)", address_ranges(cfg.spawner.ip_address_deny)),
        # A student's process may not take the hub's port or a service's while it is down (a
        # restart): /services/<name>/ would relay everyone to it, on the hub's origin, with
        # their Authorization. Enforced where systemd is built with BPF_FRAMEWORK (not
        # Debian 12's, which accepts and ignores it): there services.check_listener's look
        # at who listens is what guards a service's port.
        ("SocketBindDeny", "a(iiqq)",
         [[socket.AF_UNSPEC, socket.IPPROTO_TCP, 1, port] for port in reserved_ports(cfg)]),
    ]


def reserved_ports(cfg: Config) -> list[int]:
    """The TCP ports no server may bind: the hub's and its services' loopback ones."""
    addresses = (serviceunits.tcp_address(service.url) for _, service in cfg.services)
    return sorted({cfg.hub.port} | {address[1] for address in addresses if address})


def address_ranges(networks: tuple[str, ...]) -> list[list]:
    """IPAddressDeny='s D-Bus form: (family, address bytes, prefix length) per range."""
    ranges = []
    for text in networks:
        net = ipaddress.ip_network(text)
        family = socket.AF_INET if net.version == 4 else socket.AF_INET6
        ranges.append([int(family), net.network_address.packed, net.prefixlen])
    return ranges


def started_with_hub_oauth(environment: list[str]) -> bool:
    """Whether a unit's Environment= (as systemd reports it) is a jupyterhub-singleuser's."""
    return f"{HUB_OAUTH_VARIABLE}=1" in environment
