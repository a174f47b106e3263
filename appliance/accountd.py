"""The account helper's own side: started by systemd for each connection to
notebook-appliance-accounts.socket (Accept=yes), outside the hub's sandbox, it answers one
request (accounthelper.py describes them) and exits."""

import asyncio
import json
import logging
import os
import socket
import sys

from appliance import roster
from appliance.auth import change_password

log = logging.getLogger(__name__)

#: Longest request accepted (a roster of a few thousand lines).
MAX_REQUEST = 4 * 1024 * 1024


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
    user = str(request["user"])
    ok, reason = await asyncio.to_thread(
        change_password, str(request["service"]), user, str(request["current"]),
        str(request["new"]), str(request.get("rhost", "unknown")))
    log.info("account helper: password change for user=%r: %s", user,
             "done" if ok else f"refused: {reason}")
    return {"ok": ok, "reason": reason}


async def _create_accounts(text: str) -> dict:
    """Check the roster again and make the accounts it lacks (roster.create_all)."""
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
