"""Login policy against real PAM and real throwaway OS users."""

import asyncio
import time

import pytest

from appliance.auth import REFUSED, Authenticator
from appliance.errors import AuthError, NotFound

from .conftest import booted, run

pytestmark = pytest.mark.pam


@pytest.fixture
def authenticator(hub_config):
    """An Authenticator as the hub builds it, closed at the end."""
    def _make(**auth_overrides) -> Authenticator:
        auth = Authenticator(hub_config(auth=auth_overrides).auth)
        made.append(auth)
        return auth

    made: list[Authenticator] = []
    yield _make
    for auth in made:
        auth.close()


async def refused(auth: Authenticator, name: str, password: str) -> str:
    """Log in expecting a refusal; return the message the user would see."""
    with pytest.raises(AuthError) as info:
        await auth.login(name, password)
    return info.value.user_message


async def test_good_password_logs_in(make_user, authenticator):
    user = make_user()
    account = await authenticator().login(user.name, user.password)
    assert account.name == user.name
    assert account.uid >= 1000
    assert not account.admin


async def test_wrong_password_and_unknown_user_look_the_same(make_user, authenticator):
    user = make_user()
    auth = authenticator()
    assert await refused(auth, user.name, user.password + "x") == REFUSED
    assert await refused(auth, "nosuchuser" + user.name, user.password) == REFUSED


async def test_system_account_below_min_uid_is_refused_with_right_password(make_user,
                                                                          authenticator):
    user = make_user(uid=990)
    assert await refused(authenticator(), user.name, user.password) == REFUSED


@pytest.mark.skipif(not booted(), reason="sets root's password: only in the throwaway container")
async def test_root_is_refused_even_with_its_password(authenticator):
    run("chpasswd", input="root:root-test-password\n")
    try:
        assert await refused(authenticator(), "root", "root-test-password") == REFUSED
    finally:
        run("passwd", "--delete", "root")


async def test_locked_account_is_refused(make_user, authenticator):
    user = make_user()
    run("passwd", "--lock", user.name)
    assert await refused(authenticator(), user.name, user.password) == REFUSED


async def test_expired_account_is_refused(make_user, authenticator):
    user = make_user()
    run("chage", "--expiredate", "0", user.name)
    assert await refused(authenticator(), user.name, user.password) == REFUSED


async def test_allowed_groups(make_user, make_group, authenticator):
    group = make_group()
    inside, outside = make_user(groups=group), make_user()
    auth = authenticator(allowed_groups=[group])
    assert (await auth.login(inside.name, inside.password)).name == inside.name
    assert await refused(auth, outside.name, outside.password) == REFUSED


async def test_admin_group_and_admin_users(make_user, make_group, authenticator):
    group = make_group()
    by_group, by_name, plain = make_user(groups=group), make_user(), make_user()
    auth = authenticator(admin_group=group, admin_users=[by_name.name])
    assert (await auth.login(by_group.name, by_group.password)).admin
    assert (await auth.login(by_name.name, by_name.password)).admin
    assert not (await auth.login(plain.name, plain.password)).admin


async def test_pam_does_not_block_the_event_loop(make_user, authenticator):
    """Several logins (each ~0.5 s of yescrypt) leave the event loop free."""
    users = [make_user() for _ in range(3)]
    auth = authenticator()
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    t = asyncio.create_task(ticker())
    start = time.monotonic()
    await asyncio.gather(*(auth.login(u.name, u.password) for u in users))
    elapsed = time.monotonic() - start
    t.cancel()
    # The loop kept ticking during PAM: at least a third of the ideal number of ticks.
    assert ticks > elapsed / 0.01 / 3



def test_a_name_too_long_for_a_unit_is_refused_before_any_lookup(authenticator):
    """30 CJK characters escape to 360 in a unit name (systemd's limit is 255). useradd's
    own limit keeps such names out of /etc/passwd, but a directory (LDAP via NSS) may hold
    one: the policy refuses it, so no login makes a server that cannot start."""
    with pytest.raises(NotFound, match="cannot name a server's systemd unit"):
        authenticator().account_sync("名" * 30)
    with pytest.raises(NotFound, match="cannot name"):
        authenticator().account_sync("bob\nroot")
