"""The JSON shape comparison the JupyterHub comparison test relies on (tests/shapes.py)."""

from tests.shapes import outline, shape_diffs, shape_of, value_diffs

USER = {"kind": "user", "name": "alice", "admin": False, "roles": ["user"], "groups": [],
        "server": "/user/alice/", "pending": None, "last_activity": "2026-12-03T10:00:00Z",
        "servers": {"": {"name": "", "ready": True, "started": "2026-12-03T10:00:00Z",
                         "user_options": {}, "state": {"pid": 3}}}}


def diffs(ours, theirs, maps=()):
    return shape_diffs(shape_of(ours, maps), shape_of(theirs, maps))


def test_the_same_shape_with_other_values_is_no_difference():
    other = {**USER, "name": "bob", "last_activity": "2020-01-01T00:00:00Z",
             "servers": {"": {**USER["servers"][""], "state": {"unit": "x"},
                              "user_options": {"profile": "large"}}}}
    assert diffs(other, USER) == []


def test_missing_and_extra_keys_are_named_with_their_path():
    ours = {**USER, "servers": {"": {k: v for k, v in USER["servers"][""].items()
                                     if k != "started"} | {"gpu": 5, "memory": 5}}}
    del ours["roles"]
    assert diffs(ours, USER) == [
        "missing  roles (JupyterHub: array of string)",
        "missing  servers.*.started (JupyterHub: string)",
        "extra    servers.*.gpu (ours: integer)",  # memory: one of OUR_EXTRAS, declared
    ]


def test_types_are_compared_with_integer_and_number_apart():
    assert diffs({"total": 1.0}, {"total": 1}) == [
        "type     total: JupyterHub integer, ours number"]
    assert diffs({"admin": 0}, {"admin": False}) == [
        "type     admin: JupyterHub boolean, ours integer"]


def test_null_is_a_type_except_for_timestamps_set_on_use_and_error_messages():
    assert diffs({"server": None}, {"server": "/user/alice/"}) == [
        "type     server: JupyterHub string, ours null"]
    assert diffs({"last_activity": None}, {"last_activity": "2026-12-03T10:00:00Z"}) == []
    assert diffs({"last_activity": 5}, {"last_activity": None}) == []
    assert diffs({"last_activity": 5}, {"last_activity": "x"}) == [
        "type     last_activity: JupyterHub string, ours integer"]
    assert diffs({"status": 404, "message": "No such page."},
                 {"status": 404, "message": None}) == []
    assert diffs({"user_options": {}}, {"user_options": None}) == []
    assert diffs({"user_options": []}, {"user_options": None}) == []  # nothing to compare
    assert diffs({"user_options": []}, {"user_options": {}}) == [
        "type     user_options: JupyterHub object, ours array of nothing (empty)"]


def test_array_items_are_merged_and_an_empty_array_where_jupyterhub_has_items_is_named():
    bob = {**USER, "name": "bob", "server": None, "servers": {}}
    assert diffs([bob, USER], [USER, bob]) == []
    assert diffs([{**USER, "groups": []}], [{**USER, "groups": ["course"]}]) == [
        "empty    [].groups[]: ours is empty, JupyterHub has string"]
    assert diffs([bob, bob], [USER, bob]) == [
        "type     [].server: JupyterHub null|string, ours null",
        "empty    [].servers.* (JupyterHub: object{name, ready, started, state, user_options})"]
    assert diffs(bob, USER) == [
        "type     server: JupyterHub string, ours null",
        "empty    servers.* (JupyterHub: object{name, ready, started, state, user_options})"]


def test_top_level_maps_and_not_json_objects():
    routes = {"/": {"routespec": "/", "target": "http://127.0.0.1:1", "data": {"hub": True}}}
    ours = {"/hub/": {"routespec": "/hub/", "target": "unix:/run/x"}}
    assert diffs(ours, routes, maps={""}) == [
        "missing  *.data (JupyterHub: object{hub})"]
    assert diffs([], {"a": 1}) == ["type     (body): JupyterHub object{a}, ours array of "
                                   "nothing (empty)"]


def test_values_fixed_by_the_state_are_compared_and_lists_paired_by_name():
    bob = {**USER, "name": "bob", "server": None, "servers": {}}
    assert value_diffs([USER, bob], [bob, USER]) == []
    wrong = {**USER, "kind": "person", "roles": [], "servers": {"x": USER["servers"][""]}}
    assert value_diffs([wrong], [USER, bob]) == [
        "names    []: JupyterHub ['alice', 'bob'], ours ['alice']",
        "value    [alice].kind: JupyterHub 'user', ours 'person'",
        "value    [alice].roles: JupyterHub ['user'], ours []",
        "keys     [alice].servers: JupyterHub [''], ours ['x']",
    ]
    assert value_diffs({"roles": ["b", "a"]}, {"roles": ["a", "b"]}) == []
    assert value_diffs({"state": {"name": 1}}, {"state": {"name": 2}}) == []


def test_absolute_urls_are_compared_without_their_host_and_query_order():
    theirs = {"next": {"url": "http://127.0.0.1:8000/hub/api/users?limit=1&offset=1"}}
    assert value_diffs({"next": {"url": "http://[::1]:81/hub/api/users?offset=1&limit=1"}},
                       theirs) == []
    assert value_diffs({"next": {"url": "http://127.0.0.1:8000/hub/api/users?offset=2"}},
                       theirs) == ["value    next.url: JupyterHub 'http://127.0.0.1:8000/hub/"
                                   "api/users?limit=1&offset=1', ours 'http://127.0.0.1:8000"
                                   "/hub/api/users?offset=2'"]


def test_outline_lists_every_place_with_its_types():
    page = {"items": [{"name": "a", "servers": {}}], "_pagination": {"next": None}}
    assert outline(shape_of(page)) == [
        "(body): object", "_pagination: object", "_pagination.next: null", "items: array",
        "items[]: object", "items[].name: string", "items[].servers: object"]
