"""One nbgrader course as the README's "Works with" sets it up, as plain data (stdlib only: the
container tier's tests/integration/test_nbgrader.py and the VM tier's
tests/system/test_installed_nbgrader.py both import it).

The sysadmin's files (the global nbgrader_config.py, the grader's), the course's tables of
appliance.toml, the server role's scopes, and an assignment's notebook with one autograded
cell.
"""

import json

EXCHANGE = "/srv/nbgrader/exchange"
GLOBAL_CONFIG = "/etc/jupyter/nbgrader_config.py"

#: /etc/jupyter/nbgrader_config.py, every account's (nbgrader's docs, "JupyterHub
#: Authentication"): courses from the hub's groups, one exchange subdirectory per course.
GLOBAL_NBGRADER_CONFIG = f"""\
from nbgrader.auth import JupyterHubAuthPlugin
c = get_config()
c.Exchange.path_includes_course = True
c.Exchange.root = "{EXCHANGE}"
c.Authenticator.plugin_class = JupyterHubAuthPlugin
"""


def grader_config(grader: str, course: str) -> str:
    """~<grader>/.jupyter/nbgrader_config.py: the course directory in the grader's home."""
    return (f"c = get_config()\nc.CourseDirectory.root = '/home/{grader}/{course}'\n"
            f"c.CourseDirectory.course_id = '{course}'\n")


#: An assignment as the create-assignment extension leaves it: a solution cell and a locked
#: autograded test cell worth 2 points.
SOLUTION = ("def squares(n):\n    ### BEGIN SOLUTION\n"
            "    return [i * i for i in range(1, n + 1)]\n    ### END SOLUTION")
TESTS = "assert squares(3) == [1, 4, 9]"
ANSWER = "def squares(n):\n    return [i ** 2 for i in range(1, n + 1)]"


def cell(source: str, grade_id: str, solution: bool, points: int = 0) -> dict:
    """A code cell with nbgrader's metadata."""
    nbgrader = {"grade": bool(points), "grade_id": grade_id, "locked": not solution,
                "schema_version": 3, "solution": solution, "task": False}
    if points:
        nbgrader["points"] = points
    return {"cell_type": "code", "execution_count": None, "outputs": [], "source": source,
            "metadata": {"nbgrader": nbgrader}}


NOTEBOOK = {"nbformat": 4, "nbformat_minor": 5, "cells": [
    cell(SOLUTION, "squares", solution=True), cell(TESTS, "test_squares", False, points=2)],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                "language": "python"}, "language_info": {"name": "python"}}}


def student_add(name: str) -> str:
    """Code for a kernel of the formgrader: `nbgrader db student add <name>` as nbgrader's
    docs say (JupyterHubAuthPlugin puts them in the hub group nbgrader-<course>); its value is
    (returncode, the end of stderr)."""
    return ("import subprocess\n"
            "import sys\n"
            f"p = subprocess.run([sys.executable, '-m', 'nbgrader', 'db', 'student', 'add', "
            f"'{name}'], capture_output=True, text=True)\n(p.returncode, p.stderr[-1500:])")


def course_tables(course: str, grader: str, port: int, venv: str) -> dict:
    """The README's tables for one course: its formgrader service (jupyterhub-singleuser of
    the venv), who may open it (and find it: the course list asks for the services), and
    what the formgrader's own token does (read its account's groups; keep the hub group
    nbgrader-<course> of its students, as `nbgrader db student add` does through
    JupyterHubAuthPlugin)."""
    students = f"nbgrader-{course}"
    return {
        f"services.{course}": {
            "command": [f"{venv}/bin/jupyterhub-singleuser"],
            "url": f"http://127.0.0.1:{port}", "oauth": True,
            "user": grader, "cwd": f"/home/{grader}"},
        # nbgrader runs its venv's commands (alembic) from PATH.
        f"services.{course}.environment": {"JUPYTERHUB_DEFAULT_URL": "/formgrader",
                                           "PATH": f"{venv}/bin:/usr/local/bin:/usr/bin:/bin"},
        f"roles.formgrade-{course}": {
            "scopes": [f"access:services!service={course}", "list:services",
                       f"read:services!service={course}"],
            "groups": [f"formgrade-{course}"]},
        f"roles.{course}-formgrader": {
            # Its account's courses (it is staff: formgrade-<course>), and the students'.
            "scopes": [f"read:users:groups!user={grader}",
                       f"list:groups!group={students}", f"read:groups!group={students}",
                       f"admin:groups!group={students}", f"groups!group={students}"],
            "services": [course]},
    }


#: Every server's token: its own things as JupyterHub's server role, and reading its user's
#: groups and the services (nbgrader's course and assignment lists), as far as its user may.
SERVER_ROLE = {"scopes": ["users:activity!user", "access:servers!server",
                          "read:users:groups!user", "list:services", "read:services"]}


def toml_tables(tables: dict) -> str:
    """Tables as appliance.toml text (strings, numbers, booleans and lists of them, which
    JSON writes as TOML does)."""
    return "".join(f"\n[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n"
                                             for k, v in table.items())
                   for name, table in tables.items())
