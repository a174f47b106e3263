"""The roster: a class list as CSV (username, full name, groups) turned into OS accounts, and
the accounts the login policy admits written back as CSV.

Parsing and validation are pure functions; creating accounts is a thin layer over Debian's
own tools (adduser, chpasswd, chage), run with argument lists, never a shell, so /etc/skel,
adduser.conf's uid range and home permissions apply as for any `adduser`.
"""

import asyncio
import csv
import grp
import io
import logging
import os
import pwd
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from appliance.auth import NOBODY
from appliance.errors import ApplianceError, NotFound

log = logging.getLogger(__name__)

#: adduser.conf(5)'s default NAME_REGEX, without its optional trailing "$" (Samba machine
#: accounts are no students).
NAME = re.compile(r"[a-z][a-z0-9_-]*")
#: useradd(8): "Usernames may only be up to 32 characters long."
MAX_NAME = 32
#: Groups: the same rule, as groupadd(8) applies it, but system groups may start with "_".
GROUP = re.compile(r"[a-z_][a-z0-9_-]*")
#: Characters a GECOS full name may not hold: chfn(1) refuses ":", "," and "="; "," would
#: split it into room and phone fields (adduser's --comment does).
GECOS_FORBIDDEN = set(":,=")
#: A header line is recognised by its first cell.
HEADER_NAMES = {"username", "user", "login", "name", "user name"}
#: Initial passwords: 16 characters without look-alikes (0/O, 1/l/I), ~92 bits.
PASSWORD_ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
PASSWORD_LENGTH = 16


class RosterError(ApplianceError):
    """A roster file or an account creation failed; every problem in words, one a line."""

    status = 400

    def __init__(self, problems: list[str], created: list["Created"] | None = None):
        super().__init__("\n".join(problems), user_message="\n".join(problems))
        self.problems = problems
        #: Accounts made before a system command failed (their passwords must still be shown).
        self.created = created or []


@dataclass(frozen=True)
class Entry:
    """One student: a line of the roster."""

    line: int
    name: str
    full_name: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Created:
    """An account the import made, with its initial password."""

    name: str
    password: str


def parse(text: str) -> list[Entry]:
    """The roster's entries; RosterError naming every bad line (nothing is half-read)."""
    entries, problems, seen = [], [], {}
    for number, cells in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [c.strip() for c in cells]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if not entries and not problems and cells[0].lower() in HEADER_NAMES:
            continue  # the header line
        problem = line_problem(cells)
        if not problem and cells[0] in seen:
            problem = f"{cells[0]!r} is already on line {seen[cells[0]]}"
        if problem:
            problems.append(f"line {number}: {problem}")
            continue
        seen[cells[0]] = number
        entries.append(Entry(number, cells[0], cells[1] if len(cells) > 1 else "",
                             split_groups(cells[2] if len(cells) > 2 else "")))
    if problems:
        raise RosterError(problems)
    if not entries:
        raise RosterError(["the file holds no user names"])
    return entries


def line_problem(cells: list[str]) -> str:
    """What is wrong with one line's cells, or ''."""
    if len(cells) > 3:
        return f"expected username, full name, groups; got {len(cells)} columns"
    problem = name_problem(cells[0])
    if problem:
        return problem
    full = cells[1] if len(cells) > 1 else ""
    if not full.isprintable() or GECOS_FORBIDDEN & set(full):
        return f"the full name {full!r} may not hold ':', ',', '=' or control characters"
    bad = [g for g in split_groups(cells[2] if len(cells) > 2 else "")
           if not GROUP.fullmatch(g)]
    return f"{bad[0]!r} is not a group name" if bad else ""


def name_problem(name: str) -> str:
    """Why name is no valid user name (Debian's NAME_REGEX, at most 32), or ''."""
    if not name:
        return "the username is empty"
    if len(name) > MAX_NAME:
        return f"{name!r} is longer than {MAX_NAME} characters"
    if not NAME.fullmatch(name):
        return (f"{name!r} is not a valid username: lower-case letters, digits, '_' and '-', "
                "starting with a letter")
    return ""


def split_groups(cell: str) -> tuple[str, ...]:
    """Group names separated by blanks or ';'."""
    return tuple(g for g in re.split(r"[;\s]+", cell) if g)


def check_groups(entries: Iterable[Entry], exists: Callable[[str], bool]) -> None:
    """RosterError naming each line whose group does not exist."""
    problems = [f"line {e.line}: group {g!r} does not exist (make it first: addgroup {g})"
                for e in entries for g in e.groups if not exists(g)]
    if problems:
        raise RosterError(problems)


def new_password() -> str:
    """A random initial password."""
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))


def passwords_csv(created: Iterable[Created]) -> str:
    """username,initial password, one line each, with a header."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["username", "initial password"])
    writer.writerows((c.name, c.password) for c in created)
    return out.getvalue()


def roster_csv(entries: Iterable[Entry]) -> str:
    """The roster as import reads it: username, full name, groups (blank-separated)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["username", "full name", "groups"])
    writer.writerows((e.name, e.full_name, " ".join(e.groups)) for e in entries)
    return out.getvalue()


# --- the system: NSS lookups (call them in a thread) and Debian's account tools ----------


def group_exists(name: str) -> bool:
    """Whether NSS knows the group."""
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def account_exists(name: str) -> bool:
    """Whether NSS knows the account."""
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def plan_sync(text: str) -> tuple[list[Entry], list[str]]:
    """Parse and check a roster against the system: (to create, already there); RosterError
    before anything is made."""
    entries = parse(text)
    check_groups(entries, group_exists)
    missing = [e for e in entries if not account_exists(e.name)]
    return missing, [e.name for e in entries if e not in missing]


def export_sync(admits: Callable[[str], object]) -> list[Entry]:
    """Every account admits(name) accepts (raising NotFound otherwise), with its full name
    and supplementary groups."""
    members: dict[str, set[str]] = {}
    for g in grp.getgrall():
        for m in g.gr_mem:
            members.setdefault(m, set()).add(g.gr_name)
    entries = []
    for pw in sorted(pwd.getpwall(), key=lambda p: p.pw_name):
        if pw.pw_uid >= NOBODY:
            continue
        try:
            admits(pw.pw_name)
        except NotFound:
            continue
        entries.append(Entry(0, pw.pw_name, pw.pw_gecos.split(",")[0],
                             tuple(sorted(members.get(pw.pw_name, ())))))
    return entries


async def run(*argv: str, stdin: str | None = None) -> None:
    """Run a system command without a shell; RosterError with its own words if it fails."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "LC_ALL": "C.UTF-8"})
    _, err = await proc.communicate(stdin.encode() if stdin is not None else b"")
    if proc.returncode != 0:
        raise RosterError([f"{argv[0]} {argv[-1]} failed (exit {proc.returncode}): "
                           f"{err.decode(errors='replace').strip()}"])


async def create(entry: Entry) -> Created:
    """Make one account as `adduser` does, put it in its groups, give it a random password
    that must be changed at first login."""
    # --disabled-password: adduser asks for no password (chpasswd sets it below); --comment
    # (adduser 3.134's name for --gecos) so it asks for no full name either.
    await run("adduser", "--disabled-password", "--comment", entry.full_name, entry.name)
    for group in entry.groups:
        await run("adduser", entry.name, group)
    password = new_password()
    # chpasswd(8) reads name:password from stdin: the password is never on a command line.
    await run("chpasswd", stdin=f"{entry.name}:{password}\n")
    # chage(1) -d 0: the last change is day 0, so pam_unix's account stage answers
    # PAM_NEW_AUTHTOK_REQD and the first login must choose a new password.
    await run("chage", "-d", "0", entry.name)
    log.info("roster: user=%r created (groups %s), password to be changed at first login",
             entry.name, ",".join(entry.groups) or "-")
    return Created(entry.name, password)


async def create_all(entries: Iterable[Entry]) -> list[Created]:
    """Create each account in turn; a failure raises RosterError carrying those made so far."""
    made: list[Created] = []
    for entry in entries:
        try:
            made.append(await create(entry))
        except RosterError as e:
            raise RosterError([f"line {entry.line}: {p}" for p in e.problems], made) from None
    return made
