"""The account helper: the one small program that writes /etc for the sandboxed hub.

The installed hub runs with ProtectSystem=strict, so it can neither change a password
(pam_unix writes /etc/shadow) nor create accounts (adduser). As Cockpit keeps the network-facing
process apart from the work that needs privilege, systemd starts this helper on demand
(notebook-appliance-accounts.socket, Accept=yes: one short-lived process per request) outside
the hub's sandbox; only root may connect (SocketMode=0600). One JSON request per connection,
one JSON answer:

  {"op": "change-password", "service", "user", "current", "new", "rhost"}
      -> {"ok": true} or {"ok": false, "reason": PAM's words}
      PAM checks the current password itself (PAM_CHANGE_EXPIRED_AUTHTOK, even for root), so
      even a hub taken over cannot set a password it does not know the old one of.
  {"op": "create-accounts", "roster": CSV text}
      -> {"created": [{"name", "password"}], "problems": [...]}
      the roster is parsed and checked again here; only missing accounts are made.

Where /etc is writable (tests, a hub run by hand as root) the hub does the work itself.
"""

import asyncio
import json
import logging
import os
import socket
import sys
from pathlib import Path

log = logging.getLogger(__name__)

#: Where notebook-appliance-accounts.socket listens (units/, mode 0600 root).
SOCKET = Path("/run/notebook-appliance-accounts.sock")
#: Longest request accepted (a roster of a few thousand lines).
MAX_REQUEST = 4 * 1024 * 1024
#: How long the hub waits for an answer (adduser for a class takes a while).
TIMEOUT = 300.0


class HelperError(Exception):
    """The helper could not be reached or did not answer; says what to check."""


def needed() -> bool:
    """True where this process cannot write /etc (statvfs(3) ST_RDONLY: the installed hub's
    ProtectSystem=strict), so password changes and new accounts go through the helper."""
    return bool(os.statvfs("/etc").f_flag & os.ST_RDONLY)


def can_change_passwords() -> bool:
    """True if a first login's password change can go through: here, or by the helper."""
    return not needed() or SOCKET.exists()


async def call(request: dict, path: Path = SOCKET, timeout: float = TIMEOUT) -> dict:
    """Send one request to the helper and return its answer; HelperError if it cannot."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 10)
    except (OSError, asyncio.TimeoutError) as e:
        raise HelperError(f"cannot reach the account helper at {path}: {e}; check "
                          "`systemctl status notebook-appliance-accounts.socket`") from e
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    except (OSError, asyncio.TimeoutError) as e:
        raise HelperError(f"the account helper did not answer: {e!r}; see "
                          "`journalctl -u 'notebook-appliance-accounts@*'`") from e
    finally:
        writer.close()
    try:
        answer = json.loads(line)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise HelperError("the account helper gave no answer; see "
                          "`journalctl -u 'notebook-appliance-accounts@*'`")
    return answer


# --- the helper's side -------------------------------------------------------------------

def serve_connection(conn: socket.socket) -> None:
    """Answer the one request on conn (systemd's Accept=yes hands it over as fd 0)."""
    data = b""
    while not data.endswith(b"\n") and len(data) <= MAX_REQUEST:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    try:
        answer = asyncio.run(handle(json.loads(data)))
    except (ValueError, KeyError, TypeError) as e:
        log.warning("account helper: bad request: %s", e)
        answer = {"ok": False, "reason": "bad request", "problems": ["bad request"]}
    conn.sendall(json.dumps(answer).encode() + b"\n")


async def handle(request: dict) -> dict:
    """Carry out one request; the answer as a dict."""
    op = request["op"]
    if op == "change-password":
        return await _change_password(request)
    if op == "create-accounts":
        return await _create_accounts(str(request["roster"]))
    raise ValueError(f"unknown op {op!r}")


async def _change_password(request: dict) -> dict:
    """PAM's password change for an expired password (auth.change_password)."""
    from appliance.auth import change_password

    user = str(request["user"])
    ok, reason = await asyncio.to_thread(
        change_password, str(request["service"]), user, str(request["current"]),
        str(request["new"]), str(request.get("rhost", "unknown")))
    log.info("account helper: password change for user=%r: %s", user,
             "done" if ok else f"refused: {reason}")
    return {"ok": ok, "reason": reason}


async def _create_accounts(text: str) -> dict:
    """Check the roster again and make the accounts it lacks (roster.create_all)."""
    from appliance import roster

    try:
        missing, _ = await asyncio.to_thread(roster.plan_sync, text)
        made = await roster.create_all(missing)
        problems: list[str] = []
    except roster.RosterError as e:
        made, problems = e.created, e.problems
    log.info("account helper: %d account(s) made%s", len(made),
             f"; stopped: {problems[0]}" if problems else "")
    return {"created": [{"name": c.name, "password": c.password} for c in made],
            "problems": problems}


def main() -> int:
    """`notebook-appliance account-helper`: serve the connection systemd passed as stdin."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    conn = socket.socket(fileno=os.dup(0))
    try:
        serve_connection(conn)
    finally:
        conn.close()
    return 0
