"""Who may log in: the appliance's own account policy, then PAM for the password.

The only module that imports `pam`. PAM and NSS lookups block, so they run in thread pools:
logins on the PAM pool (a fresh PAM handle per call: python-pam 2.0.2 handles are not
thread-safe), behind a bounded line and the login throttle; re-checks of logged-in users'
accounts on a pool of their own, so a flood of bad logins never slows them.
"""

import asyncio
import collections
import ctypes
import ctypes.util
import grp
import logging
import os
import pwd
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pam
from pam.__internals import PamConv, PamHandle, PamResponse, conv_func

from appliance import accounthelper
from appliance.config import AuthConfig
from appliance.errors import AuthError, Busy, NotFound, PasswordExpired, TooManyAttempts
from appliance.systemd import escape_unit_part
from appliance.throttle import LoginThrottle, in_words

log = logging.getLogger(__name__)

#: One message for every refusal, so the form never reveals whether an account exists.
REFUSED = "Invalid username or password."
#: pam_unix's failure delay, pam_fail_delay(3) of 2 s (pam_unix(8): "nodelay"), which libpam
#: randomizes; measured here (tests/integration/test_login_guessing.py) at about 2 s too.
PAM_UNIX_DELAY = 2.0
#: How many recent wrong-password durations a policy refusal picks its delay from.
FAILURE_SAMPLES = 32
#: Told when the installed hub's account helper cannot be reached for a password change.
HELPER_DOWN = ("Your password could not be changed just now; please try again in a minute, "
               "or ask your administrator.")
#: Retry-After when the PAM line is full: a few PAM delays' worth.
BUSY_RETRY = 10
_random = random.SystemRandom()
#: A unit name's longest (systemd.unit(5)); a name whose server unit would not fit is refused
#: at login (a named server's longer name is checked when it is made).
MAX_UNIT_NAME = 255
#: nobody's uid (and above: nfsnobody, user namespaces' ranges): never a person.
NOBODY = 65534
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


#: nice(2) of the PAM threads: hashing a password (yescrypt, tens of ms of CPU) runs after the
#: event loop's work, so a class logging in never delays the pages of those already working.
PAM_NICE = 5


def _yield_to_the_loop() -> None:
    """A PAM thread's start: lower its own priority (Linux: nice is per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), PAM_NICE)
    except OSError as e:  # a sandbox without setpriority: logins just compete as before
        log.warning("PAM threads keep the hub's priority: %s", e)


class Authenticator:
    """Checks passwords with PAM and accounts against [auth] in the config."""

    def __init__(self, cfg: AuthConfig):
        self.cfg = cfg
        self._pool = ThreadPoolExecutor(max_workers=cfg.pam_threads, thread_name_prefix="pam",
                                        initializer=_yield_to_the_loop)
        self._lookups = ThreadPoolExecutor(max_workers=cfg.lookup_threads,
                                           thread_name_prefix="lookup")
        self._turns = asyncio.Semaphore(cfg.pam_threads)
        self._waiting = 0
        self.throttle = LoginThrottle(cfg.max_failures, cfg.max_failures_per_address,
                                      cfg.lockout, cfg.lockout_max)
        self._failure_times = collections.deque([PAM_UNIX_DELAY], maxlen=FAILURE_SAMPLES)

    def close(self) -> None:
        """Let running PAM conversations finish, then drop the threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._lookups.shutdown(wait=False, cancel_futures=True)

    async def login(self, username: str, password: str, client: str = "unknown") -> Account:
        """Throttle, policy, then PAM; AuthError(REFUSED) on a refusal, TooManyAttempts (429)
        when throttled, Busy (503) when the PAM line is full."""
        if not username or not password or len(username) > 64 or "\0" in username + password:
            log.info("login refused: client=%s user=%r: empty or malformed", client, username)
            raise AuthError("empty or malformed credentials", user_message=REFUSED)
        self._check_throttle(client, username)
        self.throttle.begin(client, username)
        try:
            account, refusal = await self._verify(username, password, client)
        except BaseException:  # throttled while in line, PAM line full, request cancelled
            self.throttle.abandoned(client, username)
            raise
        if account is not None or isinstance(refusal, PasswordExpired):
            self.throttle.succeeded(client, username)  # the password was right
        if account is not None:
            return account
        if isinstance(refusal, PasswordExpired):
            raise refusal
        self.throttle.failed(client, username)
        if isinstance(refusal, NotFound):
            # Answered as late as a wrong password would be, so the timing never tells
            # whether the password of root (or of anyone refused) was right.
            await asyncio.sleep(self.failure_delay())
        raise AuthError(str(refusal), user_message=REFUSED) from refusal

    def _check_throttle(self, client: str, username: str) -> None:
        """Raise TooManyAttempts while this client may not try this name."""
        wait = self.throttle.retry_after(client, username)
        if wait:
            log.info("login throttled: client=%s user=%r for %.0f s", client, username, wait)
            raise too_many(wait)

    async def _verify(self, username: str, password: str, client: str
                      ) -> tuple[Account | None, Exception | None]:
        """Policy then PAM on a PAM thread: (account, None), or (None, why it was refused)."""
        try:
            ok, reason, took, account = await self._on_pam_thread(
                client, username, self._policy_then_pam, username, password, client)
        except NotFound as e:
            log.info("login refused: client=%s user=%r by policy: %s", client, username, e)
            return None, e
        if not ok and reason == EXPIRED:
            log.info("login: client=%s user=%r must choose a new password (PAM: %s)",
                     client, username, "new authentication token required")
            return None, PasswordExpired(account.name)
        if not ok:
            self._failure_times.append(took)
            log.info("login refused: client=%s user=%r by PAM: %s", client, username, reason)
            return None, AuthError(f"PAM refused {username!r}: {reason}")
        return account, None

    def failure_delay(self) -> float:
        """How long a refusal by policy waits: one of the recent wrong passwords' times."""
        return _random.choice(self._failure_times)

    async def _on_pam_thread(self, client: str, username: str, fn, *args):
        """fn(*args) on a PAM thread once one is free, waiting in a bounded line; a client
        whose address got locked out while it waited never reaches PAM."""
        if self._turns.locked() and self._waiting >= self.cfg.pam_queue:
            log.warning("login deferred: client=%s: %d logins wait for PAM (auth.pam_queue)",
                        client, self._waiting)
            raise Busy("PAM queue full", retry_after=BUSY_RETRY, user_message=(
                "The hub is busy checking other logins; please try again in "
                f"{in_words(BUSY_RETRY)}."))
        self._waiting += 1
        try:
            await self._turns.acquire()
        finally:
            self._waiting -= 1
        wait = self.throttle.addresses.retry_after(client)
        if wait:
            self._turns.release()
            log.info("login throttled: client=%s user=%r for %.0f s", client, username, wait)
            raise too_many(wait)
        future = asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        # The turn ends when the thread does, even if the request is cancelled meanwhile:
        # clients that hang up must not get more PAM calls running than there are threads.
        future.add_done_callback(self._turn_done)
        return await asyncio.shield(future)

    def _turn_done(self, future: asyncio.Future) -> None:
        """Free the PAM turn; retrieve the result so an abandoned one is not reported."""
        self._turns.release()
        if not future.cancelled():
            future.exception()

    async def account(self, username: str) -> Account:
        """Look up an account that policy allows; NotFound (naming the reason) otherwise.

        For logged-in users (identity re-checks, pages): on its own pool, never behind PAM."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._lookups, self.account_sync, username)

    def _policy_then_pam(self, username: str, password: str, client: str
                         ) -> tuple[bool, str, float, Account]:
        """The policy (NotFound) and, only for an allowed account, PAM, timed."""
        account = self.account_sync(username)
        start = time.monotonic()
        ok, reason = self._pam_check(username, password, client)
        return ok, reason, time.monotonic() - start, account

    def _pam_check(self, username: str, password: str, client: str) -> tuple[bool, str]:
        """pam_authenticate + pam_acct_mgmt against the appliance's PAM service."""
        handle = pam.pam()
        if client != "unknown":
            _set_rhost(handle, client)
        ok = handle.authenticate(username, password, service=self.cfg.pam_service,
                                 resetcreds=False)
        if handle.code == pam.PAM_NEW_AUTHTOK_REQD:  # pam_acct_mgmt(3): must change it first
            return False, EXPIRED
        return ok, str(handle.reason)

    async def change_expired_password(self, username: str, current: str, new: str,
                                      client: str = "unknown") -> Account:
        """Replace an expired password through PAM (pam_chauthtok(3)) and return the account;
        AuthError with PAM's own words (a weak password, say) if it is refused."""
        if accounthelper.needed():  # the installed hub: /etc is read-only to it
            account = await self.account(username)
            ok, reason = await self._change_by_helper(username, current, new, client)
        else:
            ok, reason, account = await self._on_pam_thread(
                client, username, self._policy_then_change, username, current, new, client)
        if not ok:
            log.info("password change refused: client=%s user=%r by PAM: %s", client,
                     username, reason)
            raise AuthError(f"PAM refused a new password for {username!r}: {reason}",
                            user_message=reason)
        log.info("password changed: client=%s user=%r", client, username)
        return account

    async def _change_by_helper(self, username: str, current: str, new: str, client: str
                                ) -> tuple[bool, str]:
        """The same PAM change, made by the account helper (accountd.py)."""
        try:
            answer = await accounthelper.call({
                "op": "change-password", "service": self.cfg.pam_service, "user": username,
                "current": current, "new": new, "rhost": client})
        except accounthelper.HelperError as e:
            log.error("password change for user=%r: %s", username, e)
            raise AuthError(str(e), user_message=HELPER_DOWN) from e
        return bool(answer.get("ok")), str(answer.get("reason", ""))

    def _policy_then_change(self, username: str, current: str, new: str, client: str
                            ) -> tuple[bool, str, Account]:
        """The policy (NotFound), then PAM's password change."""
        account = self.account_sync(username)
        ok, reason = change_password(self.cfg.pam_service, username, current, new, client)
        return ok, reason, account

    def admitted_sync(self) -> dict[str, bool]:
        """Every account the policy's uid and group rules admit, with its admin flag, in one
        pwd/grp walk (the admin page's list; run it in a thread)."""
        cfg = self.cfg
        allowed = set(cfg.allowed_groups)
        members: dict[str, set[str]] = {}
        for g in grp.getgrall():
            for m in g.gr_mem:
                members.setdefault(m, set()).add(g.gr_name)
        gid_names = {g.gr_gid: g.gr_name for g in grp.getgrall()}
        found = {}
        for pw in pwd.getpwall():
            if pw.pw_uid < cfg.min_uid or pw.pw_uid >= NOBODY:
                continue
            groups = members.get(pw.pw_name, set()) | {gid_names.get(pw.pw_gid, "")}
            if allowed and not groups & allowed:
                continue
            found[pw.pw_name] = pw.pw_name in cfg.admin_users or (
                bool(cfg.admin_group) and cfg.admin_group in groups)
        return found

    def account_sync(self, username: str) -> Account:
        """The policy: a real account, uid above the floor, in allowed_groups if set, neither
        locked nor expired."""
        if not username.isprintable() or len(
                f"notebook-{escape_unit_part(username)}.service") > MAX_UNIT_NAME:
            raise NotFound(f"{username!r} cannot name a server's systemd unit")
        try:
            pw = pwd.getpwnam(username)
        except KeyError:
            raise NotFound(f"no account named {username!r}") from None
        if pw.pw_uid < self.cfg.min_uid:
            raise NotFound(f"{username!r} has uid {pw.pw_uid} < auth.min_uid {self.cfg.min_uid}")
        groups = _groups_of(pw)
        allowed = self.cfg.allowed_groups
        if allowed and not groups & set(allowed):
            raise NotFound(f"{username!r} is in none of auth.allowed_groups {list(allowed)}")
        why = shadow_refusal(username)
        if why:
            raise NotFound(f"{username!r} {why}")
        admin = username in self.cfg.admin_users or (
            bool(self.cfg.admin_group) and self.cfg.admin_group in groups)
        return Account(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir, pw.pw_shell,
                       frozenset(groups), admin)


def too_many(wait: float) -> TooManyAttempts:
    """The throttle's refusal, in words."""
    return TooManyAttempts(f"throttled for {wait:.0f} s", retry_after=wait, user_message=(
        f"Too many attempts; try again in {in_words(wait)}."))


def _set_rhost(handle, rhost: str) -> None:
    """Have PAM_RHOST set to the client's address (pam_unix logs it as rhost=).

    python-pam 2.0.2's authenticate() takes no remote host and runs pam_start(3) through
    pam_authenticate(3) in one call, so on this per-call handle its own ctypes binding of
    pam_authenticate is wrapped to call its binding of pam_set_item(3) first.
    """
    authenticate = handle.pam_authenticate
    item = rhost.encode()

    def set_rhost_then_authenticate(pamh, flags):
        if handle.pam_set_item(pamh, pam.PAM_RHOST, item) != pam.PAM_SUCCESS:
            log.warning("pam_set_item(PAM_RHOST, %r) failed", rhost)
        return authenticate(pamh, flags)

    handle.pam_authenticate = set_rhost_then_authenticate


#: What _pam_check says for pam_acct_mgmt's PAM_NEW_AUTHTOK_REQD.
EXPIRED = "password expired"
# python-pam 2.0.2 binds no pam_chauthtok(3); bound here as it binds the others.
_libpam = ctypes.CDLL(ctypes.util.find_library("pam"))
_libpam.pam_chauthtok.restype = ctypes.c_int
_libpam.pam_chauthtok.argtypes = [PamHandle, ctypes.c_int]


def change_password(service: str, username: str, current: str, new: str, rhost: str
                    ) -> tuple[bool, str]:
    """pam_authenticate, pam_acct_mgmt, then pam_chauthtok(PAM_CHANGE_EXPIRED_AUTHTOK) on one
    handle: (True, "") or (False, what PAM said, in words).

    python-pam 2.0.2 has no password change, and its conversation answers every prompt of a
    call with the one password; so this uses its ctypes bindings (handle, conversation types,
    pam_start/pam_end) with a conversation of its own: the prompts with echo off are answered
    in order (pam_unix asks for the current password, then the new one twice), and the
    error messages PAM shows are kept to tell the user why a password was refused.
    """
    binding = pam.pam()
    answers: list[bytes] = [current.encode()]
    said: list[str] = []
    callback = _conversation(binding.calloc, answers, said)
    conv = PamConv(callback, None)
    handle = PamHandle()
    if binding.pam_start(service.encode(), username.encode(), ctypes.byref(conv),
                         ctypes.byref(handle)) != pam.PAM_SUCCESS:
        return False, "PAM could not start"
    code = pam.PAM_SUCCESS
    try:
        if rhost != "unknown":
            binding.pam_set_item(handle, pam.PAM_RHOST, rhost.encode())
        code = binding.pam_authenticate(handle, 0)
        if code == pam.PAM_SUCCESS:
            code = binding.pam_acct_mgmt(handle, 0)
        if code not in (pam.PAM_SUCCESS, pam.PAM_NEW_AUTHTOK_REQD):
            return False, "The current password was not accepted."
        said.clear()  # pam_unix's "You are required to change your password immediately"
        answers[:] = [current.encode(), new.encode(), new.encode()]
        # PAM_CHANGE_EXPIRED_AUTHTOK: only an expired password, and pam_unix asks for the
        # current one even from root (its root shortcut needs the flag off).
        code = _libpam.pam_chauthtok(handle, pam.PAM_CHANGE_EXPIRED_AUTHTOK)
        if code != pam.PAM_SUCCESS:
            why = " ".join(said) or binding.pam_strerror(handle, code).decode()
            return False, why
        return True, ""
    finally:
        binding.pam_end(handle, code)


def _conversation(calloc, answers: list[bytes], said: list[str]):
    """A PAM conversation (pam_conv(3)) answering echo-off prompts from answers in order
    and keeping PAM's error messages in said."""
    @conv_func
    def converse(n, messages, p_response, _appdata):
        # PAM frees the responses with free(3): they must come from libc's allocator.
        addr = calloc(n, ctypes.sizeof(PamResponse))
        response = ctypes.cast(addr, ctypes.POINTER(PamResponse))
        p_response[0] = response
        for i in range(n):
            style = messages[i].contents.msg_style
            text = (messages[i].contents.msg or b"").decode(errors="replace").strip()
            if style == pam.PAM_PROMPT_ECHO_OFF:
                if not answers:
                    return pam.PAM_CONV_ERR  # more prompts than expected: give up, change nothing
                answer = answers.pop(0)
                buf = calloc(len(answer) + 1, 1)
                ctypes.memmove(buf, answer, len(answer))
                response[i].resp = buf
            elif style == pam.PAM_ERROR_MSG and text:  # not "Changing password for ..."
                said.append(text)
        return pam.PAM_SUCCESS
    return converse


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
