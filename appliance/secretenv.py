"""Run a command with secrets read from files put into its environment.

JupyterHub's tools (jupyterhub-singleuser, services such as jupyterhub-idle-culler) take their
token from $JUPYTERHUB_API_TOKEN. A unit's Environment= is printed by `systemctl show` to any
local user, and a command line is in /proc for all to read, so the token travels as a file
(0400, or a systemd credential: systemd.exec(5) LoadCredential=) and this wrapper, the unit's
ExecStart, reads it and execs the real command with the variable set. Only the process itself
(and root) can read its /proc/PID/environ.

Usage (run as a script with `python3 -I`, so starting a server imports nothing of the hub):
    secretenv.py VAR=FILE [VAR=FILE ...] -- COMMAND [ARG ...]
A relative FILE is a credential's name: it is read from $CREDENTIALS_DIRECTORY.
"""

import os
import sys

USAGE = "usage: secretenv.py VAR=FILE [VAR=FILE ...] -- COMMAND [ARG ...]"


def parse(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """(variable -> file, command) from the arguments; ValueError with the usage if malformed."""
    if "--" not in argv:
        raise ValueError(USAGE)
    split = argv.index("--")
    pairs, command = argv[:split], argv[split + 1:]
    if not command or not pairs:
        raise ValueError(USAGE)
    files = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name.isidentifier() or not path:
            raise ValueError(f"expected VAR=FILE, got {pair!r}\n{USAGE}")
        files[name] = path
    return files, command


def read_secret(path: str) -> str:
    """A secret file's contents without the trailing newline; relative: a systemd credential."""
    if not os.path.isabs(path):
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise OSError(f"{path} is a credential's name, but $CREDENTIALS_DIRECTORY is not set")
        path = os.path.join(directory, path)
    with open(path, encoding="ascii") as f:
        return f.read().strip()


def main(argv: list[str]) -> None:
    """Read the secrets and exec the command; exit 2 with a reason if that cannot be done."""
    try:
        files, command = parse(argv)
        env = dict(os.environ)
        env.update({name: read_secret(path) for name, path in files.items()})
    except (ValueError, OSError) as e:
        fail(str(e))
    try:
        os.execvpe(command[0], command, env)
    except OSError as e:
        fail(f"cannot run {command[0]}: {e.strerror}")


def fail(reason: str) -> None:
    """Say why on stderr (the unit's journal) and exit 2."""
    sys.stderr.write(f"secretenv: {reason}\n")
    sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
