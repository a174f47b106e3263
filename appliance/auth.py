"""Who may log in: PAM for the password, then the appliance's own account policy.

The only module that imports `pam`. PAM and NSS lookups block, so they run in a bounded
thread pool, with a fresh PAM handle per call (python-pam 2.0.2 handles are not thread-safe).
"""

import asyncio
import grp
import logging
import os
import pwd
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pam

from appliance.config import AuthConfig
from appliance.errors import AuthError, NotFound
from appliance.systemd import escape_unit_part

log = logging.getLogger(__name__)

#: One message for every refusal, so the form never reveals whether an account exists.
REFUSED = "Invalid username or password."
#: A unit name's longest (systemd.unit(5)); a name whose server unit would not fit is refused
#: at login (a named server's longer name is checked when it is made).
MAX_UNIT_NAME = 255
#: Where locks and expiry dates are kept (shadow(5)); root-only, like the hub.
SHADOW = Path("/etc/shadow")


@dataclass(frozen=True)
class Account:
    """An OS account that passed the appliance's policy."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str
    groups: frozenset[str]
    admin: bool


class Authenticator:
    """Checks passwords with PAM and accounts against [auth] in the config."""

    def __init__(self, cfg: AuthConfig):
        self.cfg = cfg
        self._pool = ThreadPoolExecutor(max_workers=cfg.pam_threads, thread_name_prefix="pam")

    def close(self) -> None:
        """Let running PAM conversations finish, then drop the threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def login(self, username: str, password: str) -> Account:
        """Authenticate with PAM then apply policy; raise AuthError(REFUSED) on any refusal."""
        if not username or not password or len(username) > 64 or "\0" in username + password:
            raise AuthError("empty or malformed credentials", user_message=REFUSED)
        loop = asyncio.get_running_loop()
        ok, reason = await loop.run_in_executor(self._pool, self._pam_check, username, password)
        if not ok:
            log.info("user=%r login refused by PAM: %s", username, reason)
            raise AuthError(f"PAM refused {username}: {reason}", user_message=REFUSED)
        try:
            return await self.account(username)
        except NotFound as e:
            log.info("user=%r login refused by policy: %s", username, e)
            raise AuthError(str(e), user_message=REFUSED) from e

    async def account(self, username: str) -> Account:
        """Look up an account that policy allows; NotFound (naming the reason) otherwise."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.account_sync, username)

    def _pam_check(self, username: str, password: str) -> tuple[bool, str]:
        """pam_authenticate + pam_acct_mgmt against the appliance's PAM service."""
        handle = pam.pam()
        ok = handle.authenticate(username, password, service=self.cfg.pam_service,
                                 resetcreds=False)
        return ok, str(handle.reason)

    def account_sync(self, username: str) -> Account:
        """The policy: a real account, uid above the floor, in allowed_groups if set, neither
        locked nor expired."""
        if not username.isprintable() or len(
                f"notebook-{escape_unit_part(username)}.service") > MAX_UNIT_NAME:
            raise NotFound(f"{username!r} cannot name a server's systemd unit")
        try:
            pw = pwd.getpwnam(username)
        except KeyError:
            raise NotFound(f"no account named {username}") from None
        if pw.pw_uid < self.cfg.min_uid:
            raise NotFound(f"{username} has uid {pw.pw_uid} < auth.min_uid {self.cfg.min_uid}")
        groups = _groups_of(pw)
        allowed = self.cfg.allowed_groups
        if allowed and not groups & set(allowed):
            raise NotFound(f"{username} is in none of auth.allowed_groups {list(allowed)}")
        why = shadow_refusal(username)
        if why:
            raise NotFound(f"{username} {why}")
        admin = username in self.cfg.admin_users or (
            bool(self.cfg.admin_group) and self.cfg.admin_group in groups)
        return Account(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir, pw.pw_shell,
                       frozenset(groups), admin)


def _groups_of(pw: pwd.struct_passwd) -> set[str]:
    """Names of the account's primary and supplementary groups."""
    names = set()
    for gid in os.getgrouplist(pw.pw_name, pw.pw_gid):
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return names



def shadow_refusal(username: str, path: Path = SHADOW) -> str:
    """Why the shadow file bars the account now, as pam_unix's account stage judges it
    (pam_unix(8), shadow(5)): locked (`usermod -L`: a "!" before the hash), expired
    (`usermod -e`), or a password expired longer than its inactive period. '' if none."""
    try:
        with path.open() as f:
            entry = next((line.rstrip("\n").split(":") for line in f
                          if line.startswith(username + ":")), None)
    except OSError:  # not root (a test run as a user): PAM will have its say at login
        return ""
    if entry is None or len(entry) < 8:
        return ""
    password, lastchg, maxdays, inactive, expire = (entry[i] for i in (1, 2, 4, 6, 7))
    today = int(time.time() // 86400)
    if password.startswith("!") and len(password) > 1 and password[1] not in "!*":
        return "is locked"
    if expire.isdigit() and today >= int(expire):
        return "has expired"
    if (lastchg.isdigit() and int(lastchg) > 0 and maxdays.isdigit() and inactive.isdigit()
            and today > int(lastchg) + int(maxdays) + int(inactive)):
        return "has a password that expired and went inactive"
    return ""
