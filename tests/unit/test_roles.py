"""Roles: who holds what, from the built-in roles, auth.admin_access and [roles.*]."""

from appliance import config
from appliance.roles import Roles
from appliance.scopes import parse

CULLER = ["list:users", "read:users:activity", "read:servers", "delete:servers"]


def roles_for(tmp_path, text: str, groups: dict[str, set[str]] | None = None) -> Roles:
    path = tmp_path / "appliance.toml"
    path.write_text(text)
    return Roles(config.load(path), lambda name: frozenset((groups or {}).get(name, ())))


def test_admins_open_servers_only_with_admin_access(tmp_path):
    for on in (False, True):
        roles = roles_for(tmp_path, f"[auth]\nadmin_access = {str(on).lower()}\n")
        held = parse(roles.scopes_of("teacher", roles.of_user("teacher", admin=True)))
        assert (held["access:servers"] == "*") is on  # else their own only (self)
        assert held["admin:servers"] == "*" and held["delete:users"] == "*"


def test_config_roles_reach_their_users_and_groups_members(tmp_path):
    roles = roles_for(tmp_path, '[roles.culler]\nscopes = ["list:users", "read:servers"]\n'
                      'users = ["bot"]\ngroups = ["staff"]\n', {"ann": {"staff"}})
    assert roles.of_user("bot", False) == ["user", "culler"]
    assert roles.direct("ann", False) == ["user"] and roles.of_user("ann", False) == [
        "user", "culler"]
    assert "list:users" not in roles.scopes_of("cy", roles.of_user("cy", False))


def test_a_token_is_narrowed_to_its_scopes_and_never_beyond_its_owner(tmp_path):
    roles = roles_for(tmp_path, "")
    admin = roles.scopes_of("t", roles.of_user("t", True))
    culler = parse(roles.token_scopes("t", admin, CULLER))
    assert set(culler) == {"list:users", "read:users:name", "read:users:activity",
                           "read:servers", "delete:servers", "read:users:groups"}
    assert roles.excess("t", admin, CULLER) == frozenset()
    student = roles.scopes_of("s", roles.of_user("s", False))
    assert roles.excess("s", student, ["read:servers!user"]) == frozenset()
    assert roles.excess("s", student, ["delete:users"]) == {"delete:users"}
    assert roles.token_scopes("s", student, ["inherit"]) == student


def test_a_services_roles_and_scopes(tmp_path):
    roles = roles_for(tmp_path, '[services.cull]\ncommand = ["c"]\nscopes = ["read:hub"]\n'
                      '[services.other]\n[roles.culler]\nscopes = ["list:users"]\n'
                      'services = ["cull"]\n')
    assert roles.of_service("cull") == ["culler"] and roles.of_service("other") == []
    held = parse(roles.service_scopes("cull", roles.of_service("cull")))
    assert held["list:users"] == "*" and held["read:hub"] == "*"
    assert "access:servers" not in held and "read:users" not in held  # no `self` for them
    assert roles.service_scopes("other", []) == frozenset()  # as JupyterHub reports it


def test_roles_server_redefines_the_server_tokens_scopes_within_their_owners(tmp_path):
    roles = roles_for(tmp_path, '[roles.server]\nscopes = ["users:activity!user", '
                      '"read:users:groups!user", "list:services", "read:services"]\n'
                      '[roles.staff]\nscopes = ["list:services", "read:services!service=c1"]\n'
                      'groups = ["formgrade-c1"]\n', {"ann": {"formgrade-c1"}})
    assert roles.definitions["server"][-1] == "read:services"
    assert "server" not in roles.of_user("ann", False)  # nobody is given it
    server_scopes = ["users:activity!user=s", "read:users:groups!user=s", "list:services",
                     "read:services"]
    student = parse(roles.token_scopes("s", roles.scopes_of("s", roles.of_user("s", False)),
                                       server_scopes))
    assert student["read:users:groups"] == {"user": {"s"}}
    assert "list:services" not in student  # the student holds no such scope
    ann = roles.scopes_of("ann", roles.of_user("ann", False))
    held = parse(roles.token_scopes("ann", ann, [s.replace("=s", "=ann") for s in server_scopes]))
    assert held["list:services"] == "*" and held["read:services"] == {"service": {"c1"}}
