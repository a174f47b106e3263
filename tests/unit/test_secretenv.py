"""The secret wrapper: a token from a file reaches the command's environment, nowhere else."""

import subprocess
import sys
from pathlib import Path

import pytest

from appliance import secretenv

SCRIPT = Path(secretenv.__file__)


def run(args, **kw):
    return subprocess.run([sys.executable, "-I", str(SCRIPT), *args], capture_output=True,
                          text=True, **kw)


def test_the_secret_is_in_the_environment_and_not_on_the_command_line(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    secret.chmod(0o400)
    out = run([f"JUPYTERHUB_API_TOKEN={secret}", "--", sys.executable, "-c",
               "import os, sys; print(os.environ['JUPYTERHUB_API_TOKEN']); print(sys.argv)"])
    assert out.returncode == 0, out.stderr
    token, argv = out.stdout.splitlines()
    assert token == "s3cret" and "s3cret" not in argv


def test_a_relative_name_is_a_systemd_credential(tmp_path):
    (tmp_path / "api-token").write_text("from-credential")
    out = run(["T=api-token", "--", "sh", "-c", 'echo "$T"'],
              env={"CREDENTIALS_DIRECTORY": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "from-credential"


@pytest.mark.parametrize("args, words", [
    (["sh"], "usage"),
    (["T=x", "--"], "usage"),
    (["--", "sh"], "usage"),
    (["1T=/x", "--", "sh"], "expected VAR=FILE"),
    (["T=/nonexistent/token", "--", "sh"], "No such file"),
    (["T=token", "--", "sh"], "CREDENTIALS_DIRECTORY"),
    (["T=/dev/null", "--", "/nonexistent/command"], "cannot run /nonexistent/command"),
])
def test_bad_use_exits_2_with_a_reason(args, words):
    out = run(args, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 2 and words in out.stderr
