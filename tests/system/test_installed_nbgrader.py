"""nbgrader 0.9.5 (PyPI, unmodified; the venv of tests/infra/pypi-tools.sh copied into the
guest) on the installed .deb, one course set up as the README's "Works with" says: the
course's formgrader is jupyterhub-singleuser run by the installed hub as a managed service
under the grader account, behind the hub's OAuth, open to the course's staff only; students'
servers are jupyterhub-singleuser from the same venv.

From the host, through the hub's forwarded port, as browsers: the instructor opens the
formgrader (the OAuth dance, the hub's confirmation page), enrols the student (`nbgrader db
student add` in a kernel of the formgrader), creates an assignment with an autograded cell,
generates and releases it; the student lists, fetches, answers and submits it from their own
server; the instructor collects and autogrades it, and the score is the student's. Someone
outside the course's staff gets 403 on the formgrader. The container tier's
tests/integration/test_nbgrader.py runs two courses; this one proves the installed package.

One VM for the module; the steps run in order and share `state`. The guest runs under
software emulation: timeouts are generous and nothing asserts on timings.
"""

import json

import pytest

from tests import nbgrader_course
from tests.nbgrader_course import ANSWER, NOTEBOOK, SERVER_ROLE
from tests.system.client import Person, visit_service
from tests.system.guest import CONFIG, HUB, fetch_in_vm, is_active, need, pypi_venv, wait_for

COURSE = "course101"
GRADER = f"grader-{COURSE}"
STAFF = f"formgrade-{COURSE}"
INSTRUCTOR, STUDENT, OUTSIDER, ADMIN = "carol", "alice", "bob", "root-admin"
PORT = 10110  # the formgrader's, on the guest's loopback
FORMGRADER = f"/services/{COURSE}/"
UNIT = f"notebook-appliance-service-{COURSE}.service"
#: Lab and nbgrader's extensions start slowly under the guest's emulation.
START = 600


@pytest.fixture(scope="module")
def people(vm, loop):
    """The instructor, the student and an outsider at their browsers on the host."""
    made = {name: Person(loop, vm.hub_url, name, f"pw-{name}-Xy7!")
            for name in (INSTRUCTOR, STUDENT, OUTSIDER)}
    yield made
    for person in made.values():
        person.close()


def journals(vm, *units: str) -> str:
    """The ends of units' journals in the guest, for a failure's message."""
    return "\n".join(f"--- {unit}:\n" + vm.ssh(
        f"journalctl -u {unit} -o cat --no-pager -n 60", check=False).stdout
        for unit in units)


def xsrf(person: Person) -> dict:
    """The X-XSRFToken a jupyter_server 2 wants: its _xsrf cookie (one server per person)."""
    token = person.cookie("_xsrf")
    assert token, f"{person.name} has no _xsrf cookie"
    return {"X-XSRFToken": token}


def test_apt_install_and_nbgrader_venv(vm, deb, state, tmp_path):
    """1. The .deb installs with apt; nbgrader's venv is in the guest at the host's path."""
    vm.copy_in(deb, "/root/")
    vm.ssh(f"cd /root && DEBIAN_FRONTEND=noninteractive apt install -y ./{deb.name}",
           timeout=600)
    assert wait_for("the hub to be active", lambda: is_active(vm, HUB) == "active", 120)
    state["venv"] = str(pypi_venv(vm, "nbgrader", tmp_path))
    vm.ssh(f"{state['venv']}/bin/python3 -m nbgrader --version")
    state["installed"] = True


def test_course_as_the_readme_sets_it_up(vm, people, state):
    """2. The accounts, nbgrader's files, the exchange and appliance.toml as the README says;
    the restarted hub runs the formgrader as the grader account."""
    need(state, "installed")
    venv = state["venv"]
    vm.ssh(f"groupadd {STAFF}")
    vm.ssh(f"useradd -m -s /bin/bash -G {STAFF} {GRADER}")
    vm.ssh(f"useradd -m -s /bin/bash -G {STAFF} {INSTRUCTOR}")
    vm.ssh(f"useradd -m -s /bin/bash -G notebook-admins {ADMIN}")
    for name in (STUDENT, OUTSIDER):
        vm.ssh(f"useradd -m -s /bin/bash {name}")
    vm.ssh("chpasswd", input="".join(f"{p.name}:{p.password}\n" for p in people.values()))
    vm.ssh(f"mkdir -p /etc/jupyter {nbgrader_course.EXCHANGE} && "
           f"chmod 1777 {nbgrader_course.EXCHANGE} && "
           f"cat > {nbgrader_course.GLOBAL_CONFIG}", input=nbgrader_course.GLOBAL_NBGRADER_CONFIG)
    home = f"/home/{GRADER}"
    vm.ssh(f"sudo -u {GRADER} sh -c 'mkdir -p {home}/.jupyter {home}/{COURSE} && "
           f"cat > {home}/.jupyter/nbgrader_config.py'",
           input=nbgrader_course.grader_config(GRADER, COURSE))
    # The shipped file's keys changed in place (valid TOML: no table twice), the course's
    # tables added.
    for key, value in (("command", [f"{venv}/bin/jupyterhub-singleuser"]),
                       ("shared_paths", ["/srv/data", nbgrader_course.EXCHANGE]),
                       ("sync_groups", [STAFF]), ("start_timeout", "600s")):
        vm.ssh(f"sed -i 's|^{key} = .*|{key} = {json.dumps(value)}|' {CONFIG}")
    tables = {**nbgrader_course.course_tables(COURSE, GRADER, PORT, venv),
              "roles.server": SERVER_ROLE}
    vm.ssh(f"cat >> {CONFIG}", input=nbgrader_course.toml_tables(tables))
    print(vm.ssh(f"notebook-appliance check-config {CONFIG}").stdout)
    vm.ssh(f"systemctl restart {HUB}")
    assert wait_for("the hub to be active", lambda: is_active(vm, HUB) == "active", 120)

    def listening() -> bool:
        return vm.ssh(fetch_in_vm(f"http://127.0.0.1:{PORT}{FORMGRADER}"),
                      check=False).stdout.split("\n")[0].strip() not in ("", "0")
    try:
        wait_for("the formgrader to listen", listening, timeout=START, every=5)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{journals(vm, UNIT, HUB)}") from None
    assert vm.ssh(f"systemctl show -p User --value {UNIT}").stdout.strip() in (
        GRADER, vm.ssh(f"id -u {GRADER}").stdout.strip())
    # The grader account is a hub user (JupyterHub's demo lists it in allowed_users):
    # nbgrader asks the hub for its groups.
    token = vm.ssh(f"notebook-appliance token {ADMIN}").stdout.strip()
    state["admin"] = {"Authorization": f"token {token}"}
    status, body = people[INSTRUCTOR].request("POST", "/hub/api/users", headers=state["admin"],
                                              json={"usernames": [GRADER]})
    assert status == 201, (status, body)
    state["course"] = True


def test_formgrader_is_for_the_staff_only(vm, people, state):
    """3. The instructor opens the formgrader through the hub's OAuth (its confirmation page);
    the outsider gets 403. The student logs in (a hub user, to be enrolled)."""
    need(state, "course")
    teacher, outsider = people[INSTRUCTOR], people[OUTSIDER]
    teacher.login()
    status, body, seen = visit_service(teacher, FORMGRADER)
    assert status == 200, (status, body[:500], seen, journals(vm, UNIT))
    assert any(p.startswith("/hub/api/oauth2/authorize") for p in seen), seen
    assert "formgrader" in seen[-1], seen
    outsider.login()
    status, body, seen = visit_service(outsider, FORMGRADER)
    assert status == 403, (status, body[:500], seen)
    # The student logs in before they are enrolled: nbgrader puts hub users in the course's
    # group (JupyterHub's 400 "No such user" for anyone else).
    people[STUDENT].login()
    state["formgrader"] = True


def test_enrol_create_generate_release(vm, people, state):
    """4. The student enrolled with `nbgrader db student add` in a kernel of the formgrader
    (the hub group nbgrader-<course>); an assignment created, generated and released."""
    need(state, "formgrader")
    teacher = people[INSTRUCTOR]
    out = teacher.execute(nbgrader_course.student_add(STUDENT), timeout=300,
                          headers=xsrf(teacher), prefix=FORMGRADER)
    assert out.get("result", "").startswith("(0,"), (out, journals(vm, UNIT))
    group = teacher.json("GET", f"/hub/api/groups/nbgrader-{COURSE}", headers=state["admin"])
    assert STUDENT in group["users"], (group, out)
    api = f"{FORMGRADER}formgrader/api/assignment/ps1"
    teacher.json("PUT", api, json={}, headers=xsrf(teacher))
    teacher.json("PUT", f"{FORMGRADER}api/contents/{COURSE}/source/ps1/problem1.ipynb",
                 json={"type": "notebook", "format": "json", "content": NOTEBOOK},
                 headers=xsrf(teacher))
    for step in ("assign", "release"):
        result = teacher.json("POST", f"{api}/{step}", headers=xsrf(teacher))
        assert result["success"], (step, result)
    state["released"] = True


def test_student_lists_fetches_answers_submits(vm, people, state):
    """5. From the student's own server (jupyterhub-singleuser, its own OAuth login): the
    course's assignment listed, fetched, answered and submitted."""
    need(state, "released")
    pupil = people[STUDENT]
    events = pupil.start_server(timeout=START)
    assert events and events[-1].get("ready") is True, (
        events, journals(vm, f"notebook-{STUDENT}.service"))
    mine = f"/user/{STUDENT}/"
    status, body, seen = visit_service(pupil, mine)
    assert status == 200, (status, body[:500], seen)
    listed = pupil.json("GET", f"{mine}assignments?course_id=", headers=xsrf(pupil))
    assert [(a["course_id"], a["assignment_id"], a["status"]) for a in listed["value"]] == [
        (COURSE, "ps1", "released")], listed
    listed = pupil.json("POST", f"{mine}assignments/fetch", headers=xsrf(pupil),
                        data={"course_id": COURSE, "assignment_id": "ps1"})
    fetched = [a for a in listed["value"] if a["status"] == "fetched"]
    assert fetched, listed
    path = fetched[0]["notebooks"][0]["path"]
    notebook = pupil.json("GET", f"{mine}api/contents/{path}")["content"]
    assert "raise NotImplementedError" in notebook["cells"][0]["source"], notebook
    notebook["cells"][0]["source"] = ANSWER
    pupil.json("PUT", f"{mine}api/contents/{path}", headers=xsrf(pupil),
               json={"type": "notebook", "format": "json", "content": notebook})
    result = pupil.json("POST", f"{mine}assignments/submit", headers=xsrf(pupil),
                        data={"course_id": COURSE, "assignment_id": "ps1"})
    assert any(a["status"] == "submitted" for a in result["value"]), result
    state["submitted"] = True


def test_instructor_collects_and_autogrades(vm, people, state):
    """6. The instructor collects and autogrades; the formgrader has the student's score."""
    need(state, "submitted")
    teacher = people[INSTRUCTOR]
    api = f"{FORMGRADER}formgrader/api"
    result = teacher.json("POST", f"{api}/assignment/ps1/collect", headers=xsrf(teacher))
    assert result["success"], result
    result = teacher.json("POST", f"{api}/submission/ps1/{STUDENT}/autograde",
                          headers=xsrf(teacher))
    assert result["success"], (result, journals(vm, UNIT))
    submissions = teacher.json("GET", f"{api}/submissions/ps1")
    scores = {s["student"]: (s["score"], s["max_score"], s["autograded"]) for s in submissions}
    assert scores == {STUDENT: (2.0, 2.0, True)}, submissions
