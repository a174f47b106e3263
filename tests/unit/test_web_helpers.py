"""Small web-layer rules: redirect targets, API models, timestamps."""

import pytest

from appliance.api import isoformat, user_model
from appliance.pages import safe_next
from appliance.store import UserRecord


@pytest.mark.parametrize("target, expected", [
    ("/user/alice/tree", "/user/alice/tree"),
    ("/hub/home?x=1", "/hub/home?x=1"),
    ("//evil.example/", "/hub/home"),
    ("https://evil.example/", "/hub/home"),
    ("/\\evil.example", "/hub/home"),
    ("/\t///evil.example", "/hub/home"),  # yarl and browsers drop the tab: //evil.example
    ("/\n///evil.example", "/hub/home"),
    ("/user/alice/tree/my file", "/user/alice/tree/my file"),
    ("javascript:alert(1)", "/hub/home"),
    ("", "/hub/home"),
    (None, "/hub/home"),
])
def test_only_local_paths_are_followed_after_login(target, expected):
    assert safe_next(target) == expected


def test_isoformat_is_utc_with_z():
    assert isoformat(0) == "1970-01-01T00:00:00Z"
    assert isoformat(None) is None


def test_user_model_has_jupyterhubs_fields():
    model = user_model(UserRecord("alice", False, 0.0, None), [])
    assert set(model) >= {"kind", "name", "admin", "groups", "server", "pending", "created",
                          "last_activity", "servers"}
    assert model["server"] is None and model["servers"] == {}
