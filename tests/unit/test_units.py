"""The notebook unit's shape, as pure data (no bus needed)."""

from pathlib import Path

import pytest

from appliance import config, hubenv, profiles, units
from appliance.spawner import exit_reason
from appliance.systemd import escape_unit_part, unit_name_from_path, unit_object_path

OWNER = units.Owner("alice", 1001, 1001, "/home/alice", "/bin/bash")
PATHS = units.ServerPaths.for_user(Path("/run/notebook-appliance"), "alice")


def as_given(argv, key):
    """Commands kept as written: these tests run where Jupyter may not be installed."""
    return argv


def props(cfg=None, profile=None) -> dict:
    cfg = cfg or config.defaults()
    profile = profile or profiles.load(cfg, which=as_given)[0]
    built = units.unit_properties(cfg, profile, OWNER, PATHS, "/user/alice/")
    names = [name for name, _, _ in built]
    assert len(names) == len(set(names)), "a property is set twice"
    return {name: (sig, value) for name, sig, value in built}


def test_runs_as_the_user_in_the_slice_with_limits():
    p = props()
    assert p["User"] == ("s", "1001")  # the uid: an all-digit name would be read as one
    assert p["Group"] == ("s", "1001")
    assert p["WorkingDirectory"] == ("s", "/home/alice")
    assert p["Slice"] == ("s", "notebook-appliance.slice")
    assert p["MemoryMax"] == ("t", 2**30)
    assert p["MemorySwapMax"] == ("t", 0)
    assert p["CPUQuotaPerSecUSec"] == ("t", 1_000_000)
    assert p["TasksMax"] == ("t", 512)
    assert p["OOMPolicy"] == ("s", "continue")
    assert p["Type"] == ("s", "exec")
    assert p["Nice"] == ("i", units.SERVER_NICE) and units.SERVER_NICE > 0


def test_exec_start_is_the_profiles_command_with_our_jupyter_config_through_secretenv():
    argv = ["/usr/bin/python3", "-I", str(units.SECRETENV),
            "JUPYTERHUB_API_TOKEN=/run/notebook-appliance/users/alice/token", "--",
            "jupyter-notebook", f"--config={units.JUPYTER_CONFIG}"]
    assert props()["ExecStart"] == ("a(sasb)", [["/usr/bin/python3", argv, False]])
    assert units.SECRETENV.is_file()


def test_jupyterhubs_environment_without_the_token():
    built = units.unit_properties(config.defaults(), profiles.load(
        config.defaults(), which=as_given)[0], OWNER, PATHS, "/user/alice/",
        "http://127.0.0.1:8000")
    env = dict(e.split("=", 1) for e in dict((n, v) for n, _, v in built)["Environment"])
    assert env["JUPYTERHUB_API_URL"] == "http://127.0.0.1:8000/hub/api"
    assert env["JUPYTERHUB_ACTIVITY_URL"] == "http://127.0.0.1:8000/hub/api/users/alice/activity"
    assert env["JUPYTERHUB_USER"] == "alice" and env["JUPYTERHUB_SERVER_NAME"] == ""
    assert env["JUPYTERHUB_CLIENT_ID"] == "jupyterhub-user-alice"
    assert env["JUPYTERHUB_OAUTH_CALLBACK_URL"] == "/user/alice/oauth_callback"
    assert env["JUPYTERHUB_SERVICE_PREFIX"] == "/user/alice/"
    assert env["JUPYTERHUB_OAUTH_ACCESS_SCOPES"] == (
        '["access:servers!server=alice/", "access:servers!user=alice"]')
    assert "JUPYTERHUB_API_TOKEN" not in env
    assert env["MEM_LIMIT"] == str(2**30) and env["CPU_LIMIT"] == "1"
    assert env["JUPYTERHUB_DEFAULT_URL"] == "/tree"
    assert "JUPYTERHUB_ADMIN_ACCESS" not in env  # auth.admin_access is off by default
    assert "APPLIANCE_HUB_OAUTH" not in env  # jupyter-notebook: the hub logs browsers in


def test_jupyterhub_singleuser_logs_its_browsers_in_itself(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text('[spawner]\ncommand = ["/opt/venv/bin/jupyterhub-singleuser"]\n')
    cfg = config.load(path)
    env = dict(e.split("=", 1) for e in props(cfg)["Environment"][1])
    assert env["APPLIANCE_HUB_OAUTH"] == "1"
    # What an adopted unit's Environment= says, whatever the config says by then.
    assert units.started_with_hub_oauth(props(cfg)["Environment"][1])
    assert not units.started_with_hub_oauth(props()["Environment"][1])


def test_a_profile_sets_size_stack_and_first_page(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text('[spawner]\nenvironment = { LANG = "C.UTF-8", A = "1" }\n'
                    '[profiles.small]\ndefault = true\n'
                    '[profiles.lab]\nmemory = "4G"\ncpu = 2\ntasks = 64\n'
                    'command = ["/opt/lab/bin/jupyter-lab"]\ndefault_url = "/lab"\n'
                    'environment = { A = "2" }\n')
    cfg = config.load(path)
    small, lab = profiles.load(cfg, which=as_given)
    assert props(cfg, small)["MemoryMax"] == ("t", 2**30)  # from [limits]
    p = props(cfg, lab)
    assert p["MemoryMax"] == ("t", 4 * 2**30)
    assert p["CPUQuotaPerSecUSec"] == ("t", 2_000_000)
    assert p["TasksMax"] == ("t", 64)
    assert p["ExecStart"][1][0][1][5] == "/opt/lab/bin/jupyter-lab"
    env = dict(e.split("=", 1) for e in p["Environment"][1])
    assert env["APPLIANCE_DEFAULT_URL"] == "/lab"
    assert env["A"] == "2" and env["LANG"] == "C.UTF-8"


def test_environment_points_at_socket_and_token_file_but_holds_no_secret():
    env = dict(e.split("=", 1) for e in props()["Environment"][1])
    assert env["APPLIANCE_SOCKET"] == "/run/notebook-appliance/users/alice/notebook.sock"
    assert env["APPLIANCE_TOKEN_FILE"] == "/run/notebook-appliance/users/alice/token"
    assert env["APPLIANCE_BASE_URL"] == "/user/alice/"
    assert env["HOME"] == "/home/alice" and env["USER"] == "alice"
    assert not any("TOKEN=" in e and "FILE" not in e for e in props()["Environment"][1])


def test_configured_environment_is_added(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text('[spawner]\nenvironment = { OMP_NUM_THREADS = "1" }\n')
    env = props(config.load(path))["Environment"][1]
    assert "OMP_NUM_THREADS=1" in env


def test_hardening_hides_other_homes_and_can_be_turned_off(tmp_path):
    p = props()
    assert p["ProtectHome"] == ("s", "tmpfs")
    assert p["BindPaths"] == ("a(ssbt)", [["/home/alice", "/home/alice", False, 0]])
    assert p["ProtectSystem"] == ("s", "strict")
    assert "/run/notebook-appliance/users/alice" in p["ReadWritePaths"][1]
    # Shared data stays writable where its permissions allow; a missing one is skipped.
    assert "-/srv/data" in p["ReadWritePaths"][1]
    assert p["NoNewPrivileges"] == ("b", True)
    assert p["ProtectProc"] == ("s", "invisible")
    assert p["TemporaryFileSystem"] == ("a(ss)", [
        ["/tmp", f"size={2**30},mode=1777,nosuid,nodev"],
        ["/var/tmp", f"size={2**30},mode=1777,nosuid,nodev"]])
    assert "PrivateTmp" not in p  # the capped tmpfs is private already
    # Link-local (a cloud's metadata service) is out of reach by default.
    assert p["IPAddressDeny"] == ("a(iayu)", [[2, bytes([169, 254, 0, 0]), 16],
                                              [10, bytes([0xfe, 0x80]) + bytes(14), 10]])
    path = tmp_path / "a.toml"
    path.write_text("[spawner]\nhardening = false\n")
    assert "ProtectHome" not in props(config.load(path))
    path.write_text('[spawner]\nip_address_deny = ["10.1.2.3", "192.0.2.0/24"]\n'
                    'tmp_size = "64M"\n')
    p = props(config.load(path))
    assert p["IPAddressDeny"][1] == [[2, bytes([10, 1, 2, 3]), 32],
                                    [2, bytes([192, 0, 2, 0]), 24]]
    assert p["TemporaryFileSystem"][1][0][1].startswith(f"size={64 * 2**20},")
    path.write_text('[spawner]\nip_address_deny = ["metadata"]\n')
    with pytest.raises(config.ConfigError, match="spawner.ip_address_deny: expected a list of"):
        config.load(path)


def test_no_server_may_bind_the_hubs_port_or_a_services(tmp_path):
    assert props()["SocketBindDeny"] == ("a(iiqq)", [[0, 6, 1, 8000]])
    path = tmp_path / "a.toml"
    path.write_text('[hub]\nport = 443\n[services.stats]\ncommand = ["s"]\n'
                    'url = "http://127.0.0.1:10101"\n[services.sock]\ncommand = ["s"]\n'
                    'url = "unix:/run/s.sock"\n')
    assert props(config.load(path))["SocketBindDeny"][1] == [[0, 6, 1, 443],
                                                             [0, 6, 1, 10101]]


def test_unit_names_leave_room_for_named_servers():
    assert units.unit_name("alice") == "notebook-alice.service"
    assert units.unit_name("alice", "gpu") == "notebook-alice:gpu.service"
    # '-' is systemd's path separator in names, so it is escaped as systemd-escape(1) does.
    assert units.unit_name("a-b.c") == "notebook-a\\x2db.c.service"
    assert units.base_url("alice") == "/user/alice/"
    assert units.base_url("alice", "gpu") == "/user/alice/gpu/"
    # As a browser sends a name outside URL-safe ASCII (RFC 3986).
    assert units.base_url("émile", "lab 1") == "/user/%C3%A9mile/lab%201/"
    assert units.base_url("a+b@c") == "/user/a+b@c/"  # as the proxy normalises paths


def test_escape_unit_part_escapes_what_systemd_would():
    assert escape_unit_part("alice") == "alice"
    assert escape_unit_part("first.last") == "first.last"
    assert escape_unit_part("a b") == "a\\x20b"
    assert escape_unit_part(".hidden") == "\\x2ehidden"
    assert escape_unit_part("jos\u00e9") == "jos\\xc3\\xa9"


def test_unit_object_path_round_trips():
    for name in ("notebook-alice.service", "notebook-a:b.service", "x\\x20y.slice"):
        path = unit_object_path(name)
        assert all(c.isalnum() or c in "/_" for c in path)
        assert unit_name_from_path(path) == name
    assert unit_object_path("notebook-alice.service") == \
        "/org/freedesktop/systemd1/unit/notebook_2dalice_2eservice"


def test_exit_reasons_are_plain_words():
    gib = 2**30
    assert "1 GiB memory limit" in exit_reason("oom-kill", 0, gib)
    assert "1 GiB memory limit" in exit_reason("signal", 9, gib, oom=True)
    assert "signal 9" in exit_reason("signal", 9, gib)
    assert "status 3" in exit_reason("exit-code", 3, gib)
    assert exit_reason("success", 0, gib) == "Your server stopped."


def test_servers_run_without_debugpy_and_jedi_unless_a_profile_asks(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text('[profiles.notebook]\ndefault = true\n'
                    '[profiles.lab]\ndebugger = true\njedi = true\n'
                    '[profiles.own]\nenvironment = { PYTHONPATH = "/opt/course" }\n')
    cfg = config.load(path)
    notebook, lab, own = profiles.load(cfg, which=as_given)
    env = [dict(e.split("=", 1) for e in props(cfg, p)["Environment"][1])
           for p in (notebook, lab, own)]
    lean = ":".join(str(units.STANDINS / m) for m in ("gi", "debugpy", "jedi"))
    assert env[0]["PYTHONPATH"] == lean
    assert env[1]["PYTHONPATH"] == str(units.STANDINS / "gi")
    assert env[2]["PYTHONPATH"] == f"{lean}:/opt/course"


def run_with_standins(code: str, *names: str):
    """code in a fresh Python with the named stand-ins on its path."""
    import subprocess
    import sys
    path = ":".join(str(units.STANDINS / n) for n in names)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": path})


def test_without_the_debugger_ipykernel_runs_as_where_debugpy_is_missing():
    """The stand-in makes ipykernel take its own no-debugpy path (checked with the real one)."""
    pytest.importorskip("ipykernel")
    out = run_with_standins("import ipykernel.debugger as d, sys; "
                            "print(d._is_debugpy_available, 'pydevd' in ' '.join(sys.modules))",
                            "debugpy")
    assert out.stdout.split() == ["False", "False"], out.stderr
    assert "spawner.debugger" in run_with_standins("import debugpy", "debugpy").stderr


def test_without_jedi_ipython_still_completes_names_and_attributes():
    """IPython's own completer takes over (checked with the real IPython)."""
    pytest.importorskip("IPython")
    code = ("from IPython.core import completer as c; import os, sys; "
            "ip = c.IPCompleter(namespace={'os': os}); "
            "print(c.JEDI_INSTALLED, 'jedi' in sys.modules, "
            "'os.path' in ip.complete('os.pa')[1], 'os' in ip.complete('o')[1])")
    out = run_with_standins(code, "jedi")
    assert out.stdout.split() == ["False", "False", "True", "True"], out.stderr
    assert "spawner.jedi" in run_with_standins("import jedi", "jedi").stderr


def test_without_gi_send2trash_uses_its_own_trash(tmp_path):
    """send2trash's documented fallback, the freedesktop.org trash in Python (the real one)."""
    pytest.importorskip("send2trash")
    out = run_with_standins("import send2trash, sys; print(send2trash.send2trash.__module__, "
                            "'gi' in sys.modules)", "gi")
    assert out.stdout.split() == ["send2trash.plat_other", "False"], out.stderr


def test_kernels_use_unix_sockets_in_the_units_own_tmp(tmp_path):
    env = dict(e.split("=", 1) for e in props()["Environment"][1])
    assert env["JUPYTER_RUNTIME_DIR"] == units.KERNEL_RUNTIME_DIR
    assert env["APPLIANCE_KERNEL_TRANSPORT"] == "ipc"
    # sun_path holds 108 bytes: a kernel's socket is <dir>/kernel-<uuid>-ipc-<n>.
    assert len(f"{units.KERNEL_RUNTIME_DIR}/kernel-{'x' * 36}-ipc-99") < 108
    path = tmp_path / "a.toml"
    path.write_text("[spawner]\nhardening = false\n")
    env = dict(e.split("=", 1) for e in props(config.load(path))["Environment"][1])
    # No private /tmp without the sandbox: the private run directory and TCP, as Jupyter's.
    assert env["JUPYTER_RUNTIME_DIR"] == str(PATHS.directory / "runtime")
    assert "APPLIANCE_KERNEL_TRANSPORT" not in env


def test_a_named_servers_jupyterhub_names():
    env = hubenv.environment("alice", "lab", "/user/alice/lab/", "http://127.0.0.1:8000")
    assert env["JUPYTERHUB_CLIENT_ID"] == "jupyterhub-user-alice-lab"
    assert env["JUPYTERHUB_SERVER_NAME"] == "lab"
    assert env["JUPYTERHUB_OAUTH_CALLBACK_URL"] == "/user/alice/lab/oauth_callback"
    assert env["JUPYTERHUB_SERVICE_PREFIX"] == "/user/alice/lab/"
    # jupyter_server takes its --sock only with the default port, which this URL names.
    assert env["JUPYTERHUB_SERVICE_URL"] == "http://127.0.0.1:8888/user/alice/lab/"
    assert hubenv.server_token_scopes("alice", "lab") == (
        "users:activity!user=alice", "access:servers!server=alice/lab")
