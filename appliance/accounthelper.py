"""The hub's way to the account helper (accountd.py), the one small program that writes /etc.

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
This module is the hub's side: whether the helper is needed, and one request to it.
"""

import asyncio
import json
import os
from pathlib import Path

#: Where notebook-appliance-accounts.socket listens (units/, mode 0600 root).
SOCKET = Path("/run/notebook-appliance-accounts.sock")
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
