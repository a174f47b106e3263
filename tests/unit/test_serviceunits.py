"""A JupyterHub service's unit, as pure data (no bus needed): JupyterHub's environment, the
token only as a credential, the slice, restarts."""

from pathlib import Path

from appliance import config, serviceunits

TOKEN_FILE = Path("/run/notebook-appliance/services/cull.token")
API = "http://127.0.0.1:8000/hub/api"


def service(tmp_path, text: str, name: str = "cull") -> config.ServiceConfig:
    path = tmp_path / "appliance.toml"
    path.write_text(text)
    return dict(config.load(path).services)[name]


def props(svc: config.ServiceConfig, name: str = "cull") -> dict:
    built = serviceunits.properties(name, svc, API, TOKEN_FILE)
    names = [n for n, _, _ in built]
    assert len(names) == len(set(names)), "a property is set twice"
    return {n: (sig, value) for n, sig, value in built}


def env_of(p: dict) -> dict:
    return dict(line.split("=", 1) for line in p["Environment"][1])


def test_jupyterhubs_environment_for_a_web_service(tmp_path):
    svc = service(tmp_path, '[services.cull]\ncommand = ["/opt/c/bin/python", "-m", "c"]\n'
                            'url = "http://127.0.0.1:10101"\noauth = true\n')
    env = env_of(props(svc))
    # The values JupyterHub 6.1's Service.start and Spawner.get_env give a service.
    assert env["JUPYTERHUB_SERVICE_NAME"] == "cull"
    assert env["JUPYTERHUB_SERVICE_URL"] == "http://127.0.0.1:10101"
    assert env["JUPYTERHUB_SERVICE_PREFIX"] == "/services/cull/"
    assert env["JUPYTERHUB_API_URL"] == API
    assert env["JUPYTERHUB_BASE_URL"] == "/"
    assert env["JUPYTERHUB_HOST"] == ""
    assert env["JUPYTERHUB_CLIENT_ID"] == "service-cull"
    assert env["JUPYTERHUB_OAUTH_CALLBACK_URL"] == "/services/cull/oauth_callback"
    assert env["JUPYTERHUB_OAUTH_ACCESS_SCOPES"] == (
        '["access:services", "access:services!service=cull"]')
    assert "JUPYTERHUB_API_TOKEN" not in env


def test_a_service_without_url_has_no_prefix(tmp_path):
    env = env_of(props(service(tmp_path, '[services.cull]\ncommand = ["c"]\n')))
    assert "JUPYTERHUB_SERVICE_URL" not in env and "JUPYTERHUB_SERVICE_PREFIX" not in env


def test_the_configs_environment_cannot_rename_the_service(tmp_path):
    svc = service(tmp_path, '[services.cull]\ncommand = ["c"]\nenvironment = { '
                            'JUPYTERHUB_SERVICE_NAME = "x", JUPYTERHUB_API_URL = "http://h/a", '
                            'LANG = "de_DE.UTF-8" }\n')
    env = env_of(props(svc))
    assert env["JUPYTERHUB_SERVICE_NAME"] == "cull"
    assert env["JUPYTERHUB_API_URL"] == "http://h/a"  # JupyterHub lets environment win here
    assert env["LANG"] == "de_DE.UTF-8"


def test_the_token_comes_as_a_credential_through_secretenv(tmp_path):
    p = props(service(tmp_path, '[services.cull]\ncommand = ["/opt/c/bin/python", "-m", "c"]\n'))
    (path, argv, _), = p["ExecStart"][1]
    assert path == "/usr/bin/python3"
    assert argv == ["/usr/bin/python3", "-I", str(serviceunits.SECRETENV),
                    "JUPYTERHUB_API_TOKEN=api-token", "--", "/opt/c/bin/python", "-m", "c"]
    assert serviceunits.SECRETENV.is_file()
    assert p["LoadCredential"] == ("a(ss)", [["api-token", str(TOKEN_FILE)]])


def test_its_own_slice_restarted_on_failure_a_dynamic_user_by_default(tmp_path):
    p = props(service(tmp_path, '[services.cull]\ncommand = ["c"]\n'))
    assert p["Slice"] == ("s", "notebook_appliance_services.slice")
    assert p["Restart"] == ("s", "on-failure")
    assert p["DynamicUser"] == ("b", True) and "User" not in p
    assert p["StateDirectory"] == ("as", ["notebook-appliance-service-cull"])
    p = props(service(tmp_path, '[services.cull]\ncommand = ["c"]\nuser = "grader"\n'))
    assert p["User"] == ("s", "grader") and "DynamicUser" not in p


def test_a_service_under_an_account_is_told_its_name_and_runs_in_its_cwd(tmp_path):
    # JupyterHub's Spawner.get_env names the service's user (nbgrader's formgrader asks the
    # hub for that account's groups); cwd is JupyterHub's too.
    p = props(service(tmp_path, '[services.fg]\ncommand = ["c"]\nuser = "grader"\n'
                                'cwd = "/home/grader"\n', "fg"), "fg")
    env = env_of(p)
    assert env["JUPYTERHUB_USER"] == "grader" and env["JUPYTERHUB_SERVER_NAME"] == ""
    assert p["WorkingDirectory"] == ("s", "/home/grader")
    p = props(service(tmp_path, '[services.cull]\ncommand = ["c"]\n'))
    assert env_of(p)["JUPYTERHUB_USER"] == ""  # JupyterHub's, for the hub's own account
    assert p["WorkingDirectory"] == ("s", "/var/lib/notebook-appliance-service-cull")


def test_the_description_changes_with_the_config_only(tmp_path):
    one = props(service(tmp_path, '[services.cull]\ncommand = ["c", "--timeout=60"]\n'))
    same = props(service(tmp_path, '[services.cull]\ncommand = ["c", "--timeout=60"]\n'))
    other = props(service(tmp_path, '[services.cull]\ncommand = ["c", "--timeout=90"]\n'))
    assert one["Description"] == same["Description"] != other["Description"]
    assert one["Description"][1].startswith("JupyterHub service cull (")


def test_names():
    assert serviceunits.unit_name("idle-culler") == (
        "notebook-appliance-service-idle-culler.service")


def test_the_slice_file_has_the_name_the_units_use():
    units = Path(__file__).resolve().parents[2] / "units"
    assert (units / serviceunits.SLICE).is_file()
    install = (units.parent / "debian" / "notebook-appliance.install").read_text()
    assert f"units/{serviceunits.SLICE} lib/systemd/system/" in install
