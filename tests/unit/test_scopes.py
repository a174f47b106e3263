"""JupyterHub's scopes: expansion, filters, intersection, and the refusals' words."""

import pytest

from appliance import scopes
from appliance.scopes import allows, expand, intersect, parse

CULLER = ("list:users", "read:users:activity", "read:servers", "delete:servers")


def test_subscopes_expand_as_jupyterhubs():
    assert expand(["admin:users"]) >= {"users", "read:users", "list:users", "delete:users",
                                       "users:activity", "read:users:activity",
                                       "read:users:name", "read:roles:users"}
    assert expand(["servers"]) == {"servers", "read:servers", "delete:servers",
                                   "read:users:name"}
    assert "access:servers" not in expand(["admin:servers"])


def test_self_is_the_owners_own_things_only():
    mine = parse(expand(["self"], owner="alice"))
    assert allows(mine, "servers", "server", "alice/")
    assert allows(mine, "access:servers", "server", "alice/lab")
    assert allows(mine, "tokens", "user", "alice")
    assert not allows(mine, "servers", "server", "bob/")
    assert not allows(mine, "list:users")
    assert not allows(mine, "read:users:activity", "user", "bob")


def test_group_filters_cover_the_groups_members():
    course = parse(expand(["read:servers!group=course"]))
    member = {"ann": {"course"}, "ben": set()}.__getitem__
    assert allows(course, "read:servers", "server", "ann/", member)
    assert not allows(course, "read:servers", "server", "ben/", member)
    assert not allows(course, "read:servers")


def test_a_token_gets_only_what_its_owner_holds():
    admin = expand(["admin:users", "admin:servers", "read:hub"])
    culler = intersect(expand(CULLER), admin)
    assert culler == expand(CULLER)
    student = expand(["self"], owner="ann")
    narrowed = intersect(expand(["read:servers", "access:servers"]), student)
    assert narrowed == {"read:servers!user=ann", "access:servers!user=ann",
                        "read:users:name!user=ann"}
    assert intersect(expand(["delete:users"]), student) == frozenset()


@pytest.mark.parametrize("bad, words", [
    (["read:userz"], "Scope 'read:userz'"),
    (["all"], "now called 'inherit'"),
    (["read:users!colour=red"], "Scope filter colour=red"),
    (["read:users!group"], "Scope filter group"),
])
def test_unknown_scopes_are_named(bad, words):
    with pytest.raises(scopes.ScopeNotFound, match=words):
        scopes.check_exist(bad)


def test_refusals_in_jupyterhubs_words():
    some = parse(expand(["read:servers!user=ann"]))
    assert scopes.denial(some, ("read:servers",), filtered=True) == scopes.Denied(
        404, "No access to resources or resources not found")
    assert scopes.denial(some, ("delete:servers",), filtered=True) == scopes.Denied(
        403, "Action is not authorized with current scopes; requires any of [delete:servers]")
