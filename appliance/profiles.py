"""Profiles: the server sizes and stacks users choose from, resolved once at start-up.

A Profile is frozen and complete (limits, command, environment, first page): units.py builds a
unit from it alone. Without [profiles.*] tables, [limits] and [spawner] make the one profile.
Who may choose which: a profile's groups (empty: everyone); a user in several groups may
choose every profile any of them allows, never more.
"""

import shutil
from collections.abc import Callable
from dataclasses import dataclass

from appliance import hubenv
from appliance.config import Config, ProfileConfig, format_size
from appliance.errors import BadRequest, ConfigError, Forbidden

#: Where a profile's program is looked up (the units run with this PATH too).
PROGRAM_PATH = "/usr/local/bin:/usr/bin:/bin"
#: The name of the one profile made from [limits] and [spawner].
IMPLICIT = "default"


@dataclass(frozen=True)
class Profile:
    """Everything a server's unit needs to know about its size and stack."""

    name: str
    description: str
    memory: int
    cpu: float
    tasks: int
    #: The command with its program made absolute.
    command: tuple[str, ...]
    environment: tuple[tuple[str, str], ...]
    default_url: str
    #: debugpy loads in the server and its kernels (JupyterLab's debugger panel).
    debugger: bool = False
    #: jedi loads in its kernels (IPython's type-inferring completion).
    jedi: bool = False
    groups: tuple[str, ...] = ()
    default: bool = False

    @property
    def size(self) -> str:
        """"1 GiB, 1 core" for forms and pages."""
        cores = f"{self.cpu:g} core" + ("" if self.cpu == 1 else "s")
        return f"{format_size(self.memory)}, {cores}"

    def open_to(self, groups: frozenset[str]) -> bool:
        """True if a member of these groups may choose this profile."""
        return not self.groups or bool(groups & set(self.groups))


#: Makes a command's program absolute, or raises ConfigError naming the key: (argv, key).
Which = Callable[[tuple[str, ...], str], tuple[str, ...]]


def load(cfg: Config, which: Which | None = None) -> tuple[Profile, ...]:
    """Every profile, resolved; ConfigError naming the key if a command is not installed.

    Blocking (looks programs up on disk): call it from a thread.
    """
    which = which or resolve_command
    where = cfg.source or "defaults"
    if not cfg.profiles:
        implicit = ProfileConfig(description="", memory=None, cpu=None, tasks=None,
                                 command=None, environment=(), default_url=None,
                                 debugger=None, jedi=None, groups=(), default=True)
        return (_resolve(IMPLICIT, implicit, cfg, which, f"{where}: spawner.command"),)
    return tuple(_resolve(name, p, cfg, which, f"{where}: profiles.{name}.command"
                          if p.command else f"{where}: spawner.command")
                 for name, p in cfg.profiles)


def _resolve(name: str, p: ProfileConfig, cfg: Config, which: Which,
             command_key: str) -> Profile:
    """A ProfileConfig with what it leaves out taken from [limits] and [spawner]."""
    limits, spawner = cfg.limits, cfg.spawner
    command = which(p.command or spawner.command, command_key)
    if cfg.hub.user_domain and hubenv.speaks_hub_oauth(command):
        # Its OAuth login would send browsers to the hub's paths on the user's own host,
        # which serves nothing of the hub (origins.py): refused rather than a broken login.
        raise ConfigError(f"{command_key}: jupyterhub-singleuser cannot log browsers in on "
                          "users' own hosts (hub.user_domain) yet; use it without "
                          "hub.user_domain, or jupyter-notebook")
    return Profile(
        name=name, description=p.description or name,
        memory=p.memory or limits.memory, cpu=p.cpu or limits.cpu,
        tasks=p.tasks or limits.tasks,
        command=command,
        environment=tuple(sorted({**dict(spawner.environment),
                                  **dict(p.environment)}.items())),
        default_url=p.default_url or spawner.default_url,
        debugger=spawner.debugger if p.debugger is None else p.debugger,
        jedi=spawner.jedi if p.jedi is None else p.jedi,
        groups=p.groups, default=p.default)


def resolve_command(argv: tuple[str, ...], key: str) -> tuple[str, ...]:
    """The command with its program made absolute; ConfigError if it is not installed."""
    program = shutil.which(argv[0], path=PROGRAM_PATH)
    if program is None:
        raise ConfigError(f"{key}: {argv[0]!r} is not an installed program "
                          "(apt install jupyter-notebook?)")
    return (program, *argv[1:])


def open_to(profiles: tuple[Profile, ...], groups: frozenset[str]) -> list[Profile]:
    """The profiles a member of these groups may choose, in the config's order."""
    return [p for p in profiles if p.open_to(groups)]


def choose(profiles: tuple[Profile, ...], groups: frozenset[str],
           requested: str | None) -> Profile:
    """The profile a start uses: the one asked for if allowed, else the user's default.

    The default is the configured default when open to the user, else the largest open to
    them. BadRequest for an unknown name, Forbidden (naming it) for one not open to them.
    """
    allowed = open_to(profiles, groups)
    if requested:
        known = {p.name: p for p in profiles}
        if requested not in known:
            raise BadRequest(f"no profile named {requested!r}",
                             user_message=f"There is no profile named {requested!r}; choose "
                                          f"one of: {', '.join(p.name for p in allowed)}.")
        if known[requested] not in allowed:
            raise Forbidden(f"profile {requested!r} is not open to this user",
                            user_message=f"You may not use the profile {requested!r}.")
        return known[requested]
    if not allowed:
        raise Forbidden("no profile is open to this user's groups",
                        user_message="No server profile is open to you; ask your "
                                     "administrator.")
    return next((p for p in allowed if p.default),
                max(allowed, key=lambda p: (p.memory, p.cpu)))


def default(profiles: tuple[Profile, ...]) -> Profile:
    """The configured default profile (the first when none says default = true)."""
    return next((p for p in profiles if p.default), profiles[0])


def named(profiles: tuple[Profile, ...], name: str) -> Profile:
    """The profile called name, or the default one when it is gone from the config."""
    return next((p for p in profiles if p.name == name), default(profiles))
