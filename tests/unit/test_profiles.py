"""Who may choose which profile, and what a start gets without choosing (no systemd needed)."""

import pytest

from appliance import config, profiles
from appliance.errors import BadRequest, ConfigError, Forbidden

CONFIG = """
[limits]
memory = "1G"
[profiles.small]
description = "Small"
default = true
groups = ["students"]
[profiles.medium]
memory = "2G"
groups = ["students", "staff"]
[profiles.large]
memory = "8G"
cpu = 4
groups = ["research"]
[profiles.open]
memory = "512M"
"""


@pytest.fixture
def loaded(tmp_path):
    path = tmp_path / "appliance.toml"
    path.write_text(CONFIG)
    return profiles.load(config.load(path), which=lambda argv, key: argv)


def names(found):
    return [p.name for p in found]


def test_each_user_sees_what_their_groups_allow(loaded):
    assert names(profiles.open_to(loaded, frozenset({"students"}))) == ["small", "medium",
                                                                         "open"]
    assert names(profiles.open_to(loaded, frozenset({"staff"}))) == ["medium", "open"]
    assert names(profiles.open_to(loaded, frozenset())) == ["open"]
    both = frozenset({"students", "research"})
    assert names(profiles.open_to(loaded, both)) == ["small", "medium", "large", "open"]


def test_without_a_choice_the_default_or_the_largest_allowed(loaded):
    assert profiles.choose(loaded, frozenset({"students"}), None).name == "small"
    # staff may not use the default: they get the largest any of their groups allows.
    assert profiles.choose(loaded, frozenset({"staff"}), None).name == "medium"
    assert profiles.choose(loaded, frozenset({"research", "staff"}), None).name == "large"


def test_a_profile_not_open_to_the_user_is_refused_by_name(loaded):
    with pytest.raises(Forbidden) as e:
        profiles.choose(loaded, frozenset({"students"}), "large")
    assert e.value.status == 403 and "'large'" in e.value.user_message
    with pytest.raises(BadRequest) as e:
        profiles.choose(loaded, frozenset({"students"}), "huge")
    assert "small, medium, open" in e.value.user_message


def test_sizes_read_in_words(loaded):
    assert {p.name: p.size for p in loaded} == {
        "small": "1 GiB, 1 core", "medium": "2 GiB, 1 core", "large": "8 GiB, 4 cores",
        "open": "512 MiB, 1 core"}


def test_without_profiles_limits_and_spawner_are_the_one_profile():
    [only] = profiles.load(config.defaults(), which=lambda argv, key: argv)
    assert (only.name, only.memory, only.cpu, only.command) == (
        "default", 2**30, 1.0, ("jupyter-notebook",))
    assert profiles.choose((only,), frozenset(), None) is only


def test_a_profile_command_that_is_not_installed_names_its_key(tmp_path):
    path = tmp_path / "appliance.toml"
    path.write_text('[profiles.lab]\ncommand = ["no-such-jupyter-lab"]\n')
    with pytest.raises(ConfigError) as e:
        profiles.load(config.load(path))
    assert str(e.value).startswith(f"{path}: profiles.lab.command: 'no-such-jupyter-lab' is not")


def test_jupyterhub_singleuser_is_refused_with_users_own_hosts(tmp_path):
    path = tmp_path / "appliance.toml"
    path.write_text('[hub]\nuser_domain = "users.example.org"\n'
                    '[profiles.lab]\ncommand = ["/opt/lab/bin/jupyterhub-singleuser"]\n')
    with pytest.raises(ConfigError) as e:
        profiles.load(config.load(path), which=lambda argv, key: argv)
    assert str(e.value).startswith(f"{path}: profiles.lab.command: jupyterhub-singleuser "
                                   "cannot log browsers in on users' own hosts")
