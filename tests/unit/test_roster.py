"""The roster's pure parts: CSV parsing and validation with line numbers, group checks,
passwords and the CSV written back; the pending first-login password changes."""

import pytest

from appliance import roster
from appliance.firstlogin import MAX_TRIES, TTL, FirstLogins
from appliance.pages import new_password_problem


def problems(text: str) -> list[str]:
    """The problems parse() reports for text."""
    with pytest.raises(roster.RosterError) as info:
        roster.parse(text)
    return info.value.problems


def test_a_header_blank_lines_and_groups_split_on_blanks_or_semicolons():
    entries = roster.parse("Username,Full name,Groups\n\nada,Ada Lovelace,math; physics\n"
                           "bob,Bob\ncy\n")
    assert entries == [roster.Entry(3, "ada", "Ada Lovelace", ("math", "physics")),
                       roster.Entry(4, "bob", "Bob", ()), roster.Entry(5, "cy", "", ())]


def test_every_bad_line_is_named_by_number():
    assert problems("ok,Fine\nAda,Capital\n1st,Digit\n" + "x" * 33 + ",Long\n"
                    "ok,Twice\nfine,Has: colon\ngood,G,Bad/Group\nmany,a,b,c\n") == [
        "line 2: 'Ada' is not a valid username: lower-case letters, digits, '_' and '-', "
        "starting with a letter",
        "line 3: '1st' is not a valid username: lower-case letters, digits, '_' and '-', "
        "starting with a letter",
        f"line 4: '{'x' * 33}' is longer than 32 characters",
        "line 5: 'ok' is already on line 1",
        "line 6: the full name 'Has: colon' may not hold ':', ',', '=' or control characters",
        "line 7: 'Bad/Group' is not a group name",
        "line 8: expected username, full name, groups; got 4 columns",
    ]


def test_a_header_is_only_the_first_line_and_an_empty_file_is_refused():
    assert [e.name for e in roster.parse("ada,Ada\nusername,A User\n")] == ["ada", "username"]
    assert problems("\n\n") == ["the file holds no user names"]


def test_unknown_groups_are_named_with_their_line():
    entries = roster.parse("ada,Ada,math\nbob,Bob,math;nosuch\n")
    roster.check_groups(entries, lambda g: True)
    with pytest.raises(roster.RosterError) as info:
        roster.check_groups(entries, lambda g: g == "math")
    assert info.value.problems == [
        "line 2: group 'nosuch' does not exist (make it first: addgroup nosuch)"]


def test_passwords_are_random_and_the_csv_round_trips():
    assert len({roster.new_password() for _ in range(50)}) == 50
    assert len(roster.new_password()) == roster.PASSWORD_LENGTH
    assert roster.passwords_csv([roster.Created("ada", "pw1")]) == \
        "username,initial password\nada,pw1\n"
    entries = [roster.Entry(0, "ada", "Ada Lovelace", ("math", "physics"))]
    assert [(e.name, e.full_name, e.groups) for e in roster.parse(roster.roster_csv(entries))] \
        == [("ada", "Ada Lovelace", ("math", "physics"))]


def test_a_pending_change_is_for_its_client_only_expires_and_has_few_tries():
    now = [0.0]
    changes = FirstLogins(clock=lambda: now[0])
    change = changes.begin("ada", "old", "10.0.0.1")
    assert changes.take_turn(change, "10.0.0.2") is None
    assert changes.take_turn(change, "10.0.0.1").current == "old"
    for _ in range(MAX_TRIES - 1):
        assert changes.take_turn(change, "10.0.0.1") is not None
    assert changes.take_turn(change, "10.0.0.1") is None  # out of tries, and forgotten
    later = changes.begin("bob", "old", "10.0.0.1")
    now[0] += TTL
    assert changes.take_turn(later, "10.0.0.1") is None
    assert changes.take_turn("made-up", "10.0.0.1") is None


def test_the_hub_checks_the_two_new_passwords_before_pam():
    assert new_password_problem("old", "new-one", "new-one") == ""
    assert "differ" in new_password_problem("old", "new-one", "new-two")
    assert "differ from the current" in new_password_problem("old", "old", "old")
    assert new_password_problem("old", "", "") == "Please type a new password."
