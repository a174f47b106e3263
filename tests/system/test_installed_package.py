"""The installed .deb on a booted Debian 12 VM, driven from the host like a sysadmin and users.

One VM for the whole module; the steps run in order and share `state`. A step whose
prerequisite failed is skipped, naming the step. Timeouts are generous (the VM runs under
software emulation) and nothing here asserts on timings.
"""

import ast
import asyncio
import json
import re
import time
import tomllib
from pathlib import Path

import aiohttp
import pytest

from tests.system.client import Person, visit_service
from tests.system.guest import CONFIG, HUB, fetch_in_vm, is_active, need, pypi_venv, wait_for

USER1, USER2, INSTRUCTOR = "alice", "bob", "carol"
DATA_FILE = "/srv/data/syllabus.txt"
DATA_TEXT = "week 1: numpy"


def show(vm, unit: str, *props: str) -> dict[str, str]:
    """`systemctl show -p ...` of a unit in the VM, as a dict."""
    out = vm.ssh(f"systemctl show {unit} -p {','.join(props)}").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def size_bytes(text: str) -> int:
    """appliance.toml's sizes ("1G", "512M") in bytes (powers of 1024)."""
    number, unit = re.fullmatch(r"([\d.]+)\s*([KMGT]?)", text.strip().upper()).groups()
    return int(float(number) * 1024 ** " KMGT".index(unit or " "))


def timespan_usec(text: str) -> int:
    """systemd's printed time span ("1s", "500ms", "1s 500ms") in microseconds."""
    scale = {"us": 1, "ms": 1000, "s": 10**6, "min": 60 * 10**6}
    return round(sum(float(n) * scale[u] for n, u in re.findall(r"([\d.]+)(min|ms|us|s)", text)))


@pytest.fixture(scope="module")
def people(vm, loop):
    """The two users at their browsers on the host (made in the VM by test_users)."""
    made = {name: Person(loop, vm.hub_url, name, f"pw-{name}-Xy7!") for name in (USER1, USER2)}
    yield made
    for person in made.values():
        person.close()


def test_apt_install(vm, deb, state):
    """1. The .deb installs offline with apt, and the hub is running."""
    vm.copy_in(deb, "/root/")
    out = vm.ssh(f"cd /root && DEBIAN_FRONTEND=noninteractive apt install -y ./{deb.name}",
                 timeout=600)
    print(out.stdout[-2000:])
    assert wait_for("the hub to be active", lambda: is_active(vm, HUB) == "active", 120)
    assert is_active(vm, f"{HUB}.socket") == "active"
    assert is_active(vm, "notebook-appliance-accounts.socket") == "active"
    # The sysadmin is told where students open the hub (net.py: the VM's own address).
    journal = wait_for("the hub's start-up lines", lambda: "students open" in (
        out := vm.ssh(f"journalctl -u {HUB} --no-pager -n 50").stdout) and out, 60)
    assert re.search(r"students open http://\d+\.\d+\.\d+\.\d+:8000/", journal), journal
    state["installed"] = True


def test_users_and_instructor(vm, people, state):
    """2a. Two users with passwords; an instructor puts a file in /srv/data."""
    need(state, "installed")
    for person in people.values():
        vm.ssh(f"useradd -m -s /bin/bash {person.name}")
        vm.ssh("chpasswd", input=f"{person.name}:{person.password}\n")
    vm.ssh(f"useradd -m -s /bin/bash -G notebook-instructors {INSTRUCTOR}")
    vm.ssh(f"sudo -u {INSTRUCTOR} sh -c 'echo \"{DATA_TEXT}\" > {DATA_FILE}'")
    # Plain users cannot write there, whatever sandbox their server runs in.
    denied = vm.ssh(f"sudo -u {USER1} touch /srv/data/nope", check=False)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr, denied
    state["users"] = True


def test_login_and_spawn(vm, people, state):
    """2b. Log in through the form from the host, start a server, follow progress to ready."""
    need(state, "users")
    alice = people[USER1]
    alice.login()
    me = alice.json("GET", "/hub/api/user")
    assert me["name"] == USER1
    events = alice.start_server()
    assert events, "empty progress stream"
    assert events[-1].get("ready") is True, events
    status, _ = alice.request("GET", f"/user/{USER1}/api/status")
    assert status == 200
    state["alice_ready"] = True


def test_unit_runs_as_user_with_limits(vm, state):
    """3. The user's unit runs as that user, in the slice, with the configured limits."""
    need(state, "alice_ready")
    cfg = tomllib.loads(vm.ssh(f"cat {CONFIG}").stdout)
    props = show(vm, f"notebook-{USER1}.service",
                 "User", "MemoryMax", "CPUQuotaPerSecUSec", "TasksMax", "Slice", "ActiveState")
    assert props["ActiveState"] == "active"
    # User= holds the uid (an all-digit name would otherwise be read as one); the process
    # runs as the account.
    assert props["User"] == vm.ssh(f"id -u {USER1}").stdout.strip()
    pid = show(vm, f"notebook-{USER1}.service", "MainPID")["MainPID"]
    assert vm.ssh(f"ps -o user= -p {pid}").stdout.strip() == USER1
    assert int(props["MemoryMax"]) == size_bytes(cfg["limits"]["memory"])
    assert timespan_usec(props["CPUQuotaPerSecUSec"]) == round(cfg["limits"]["cpu"] * 10**6)
    assert int(props["TasksMax"]) == cfg["limits"]["tasks"]
    assert props["Slice"] == cfg["spawner"]["slice"]
    # The slice caps all servers together below the machine's memory.
    total = int(vm.ssh("awk '/MemTotal/ {print $2 * 1024}' /proc/meminfo").stdout)
    slice_max = show(vm, cfg["spawner"]["slice"], "MemoryMax")["MemoryMax"]
    print(f"slice MemoryMax={slice_max} of {total} bytes")
    assert slice_max.isdigit() and int(slice_max) < total


def test_hub_unit_is_notify_watchdog_and_hardened(vm, state):
    """3b. The hub is Type=notify with a watchdog, says what it serves, and is sandboxed."""
    need(state, "alice_ready")
    props = show(vm, HUB, "Type", "WatchdogUSec", "StatusText", "User", "ProtectSystem",
                 "NoNewPrivileges", "LimitNOFILE", "MemoryHigh", "MemoryMax")
    print(props)
    assert props["Type"] == "notify"
    # Room for the 5,000 idle connections of tests/integration/test_floods.py, and a
    # memory cap of the hub's own.
    assert int(props["LimitNOFILE"]) >= 3 * 5000
    assert int(props["MemoryHigh"]) == 2**30 and int(props["MemoryMax"]) == 2 * 2**30
    assert timespan_usec(props["WatchdogUSec"]) > 0
    assert props["ProtectSystem"] == "strict" and props["NoNewPrivileges"] == "yes"
    # STATUS= is refreshed every 10 s from the event loop.
    wait_for("STATUS= to count alice", lambda: re.search(
        r"[1-9]\d* users? logged in, [1-9]\d* servers? running",
        show(vm, HUB, "StatusText")["StatusText"]), timeout=60)
    security = vm.ssh(f"systemd-analyze security --no-pager {HUB}.service", check=False)
    score = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
    print("systemd-analyze security:", score and score.group(0))
    # The hub runs as root (PAM, units for any user); the sandbox still keeps it far
    # below a plain service's 9.6.
    assert score and float(score.group(1)) <= 5.0, security.stdout[-3000:]


SHARED_CHECK = """
import errno, os, pathlib
shared = pathlib.Path.home() / "shared"
try:
    open("/srv/data/written-by-student", "w")
    wrote = "wrote it"
except OSError as e:
    wrote = type(e).__name__ + " " + errno.errorcode[e.errno]
[shared.is_symlink(), os.readlink(shared), (shared / "syllabus.txt").read_text().strip(), wrote]
"""


def test_kernel_over_proxied_websocket(vm, people, state):
    """4. Code runs in a kernel through the hub; ~/shared links to /srv/data, read-only."""
    need(state, "alice_ready")
    alice = people[USER1]
    assert alice.execute("6*7") == {"result": "42"}
    out = alice.execute(SHARED_CHECK)
    assert "result" in out, out
    is_link, target, text, wrote = ast.literal_eval(out["result"])
    assert is_link and target == "/srv/data"
    assert text == DATA_TEXT
    # EROFS instead would mean the unit's sandbox (ProtectSystem=strict) makes /srv/data
    # read-only for every server, so instructors could not write it from a notebook either.
    assert wrote == "PermissionError EACCES", wrote
    assert vm.ssh("test -e /srv/data/written-by-student", check=False).returncode != 0


METADATA = ("169.254.169.254", 8080)
#: An address on lo, with pyroute2 (the package depends on it; the image has no iproute2).
LOOPBACK_ADDRESS = ("python3 -c \"from pyroute2 import IPRoute; ip = IPRoute(); "
                    "ip.addr('{verb}', index=ip.link_lookup(ifname='lo')[0], "
                    "address='{host}', mask=32)\"")
METADATA_CHECK = f"""
import socket
try:
    socket.create_connection({METADATA!r}, timeout=5).close()
    r = "connected"
except OSError as e:
    r = type(e).__name__
r
"""


def test_cloud_metadata_is_out_of_reach(vm, people, state):
    """4b. IPAddressDeny= (link-local by default): a stand-in metadata service on
    169.254.169.254 answers root in the VM, and a user's server cannot reach it."""
    need(state, "alice_ready")
    host, port = METADATA
    vm.ssh(LOOPBACK_ADDRESS.format(verb="add", host=host))  # no iproute2 in the image
    vm.ssh(f"systemd-run --unit=fake-metadata python3 -m http.server --bind {host} {port}")
    try:
        control = (f"python3 -c \"import socket; socket.create_connection(('{host}', {port}), "
                   "timeout=5).close(); print('connected')\"")
        reached = wait_for("the stand-in metadata service", lambda: vm.ssh(
            control, check=False).stdout.strip() == "connected", 30)
        assert reached
        result = people[USER1].execute(METADATA_CHECK)
        print("from alice's server:", result)
        assert result["result"] in ("'PermissionError'", "'TimeoutError'"), result
    finally:
        vm.ssh("systemctl stop fake-metadata", check=False)
        vm.ssh(LOOPBACK_ADDRESS.format(verb="del", host=host), check=False)


def test_admin_sees_the_cgroups_own_memory(vm, people, state):
    """4c. The console's numbers are the cgroup's: alice's memory as GET /hub/api/users gives
    it to an admin is within 10 % of what systemd says (MemoryCurrent), and the admin page
    shows the server running."""
    need(state, "alice_ready")
    vm.ssh(f"adduser {INSTRUCTOR} notebook-admins")
    token = vm.ssh(f"notebook-appliance token {INSTRUCTOR}").stdout.strip()
    auth = {"Authorization": f"token {token}"}

    def both() -> tuple[int, int] | None:
        model = people[USER1].json("GET", "/hub/api/users/" + USER1, headers=auth)
        ours = model["servers"][""].get("memory")
        theirs = show(vm, f"notebook-{USER1}.service", "MemoryCurrent")["MemoryCurrent"]
        if ours is None or not theirs.isdigit():
            return None
        return ours, int(theirs)

    ours, theirs = wait_for("the sampler's reading", both, 30)
    print(f"hub: {ours} bytes, systemd: {theirs} bytes")
    assert abs(ours - theirs) <= 0.1 * theirs
    status, page = people[USER1].request("GET", "/hub/admin", headers=auth)
    assert status == 200 and f'data-user="{USER1}"' in page and "state-running" in page


def test_other_user_is_forbidden(vm, people, state):
    """5. Another logged-in user gets 403 on the first user's server."""
    need(state, "alice_ready")
    bob = people[USER2]
    bob.login()
    status, _ = bob.request("GET", f"/user/{USER1}/api/kernels")
    assert status == 403
    state["bob_logged_in"] = True


ROSTER_STUDENT = "dora"


def test_accounts_from_the_web_through_the_helper(vm, loop, people, state):
    """5a. Accounts from the web in the installed, sandboxed hub (ProtectSystem=strict): an
    admin imports a roster and the new student's first login sets a new password. Both
    write /etc, so both go through the account helper's socket-activated units."""
    need(state, "alice_ready")
    assert show(vm, HUB, "ProtectSystem")["ProtectSystem"] == "strict"
    assert is_active(vm, "notebook-appliance-accounts.socket") == "active"
    vm.ssh(f"sed -i 's/^manage_accounts = false$/manage_accounts = true/' {CONFIG}")
    vm.ssh(f"systemctl restart {HUB}")
    wait_for("the hub to be active", lambda: is_active(vm, HUB) == "active", 120)
    teacher = Person(loop, vm.hub_url, INSTRUCTOR, "pw-carol-Qz8!")
    try:
        vm.ssh(f"adduser {INSTRUCTOR} notebook-admins", check=False)  # 4c may have done it
        vm.ssh("chpasswd", input=f"{INSTRUCTOR}:{teacher.password}\n")
        wait_for("the teacher's login", lambda: teacher.try_login() in (302, 303), 60)
        status, page = teacher.request("POST", "/hub/admin/roster/create", data={
            "_xsrf": teacher.xsrf, "text": f"{ROSTER_STUDENT},Dora Explorer,\n"})
        print(page[-1500:])
        assert status == 200, page[-1500:]
        initial = re.search(rf'data-created="{ROSTER_STUDENT}"><td>[^<]*</td><td><code>'
                            r"([^<]+)</code>", page).group(1)
    finally:
        teacher.close()
    assert vm.ssh(f"getent passwd {ROSTER_STUDENT}").stdout.startswith(ROSTER_STUDENT)
    assert vm.ssh(f"test -d /home/{ROSTER_STUDENT}", check=False).returncode == 0
    dora = Person(loop, vm.hub_url, ROSTER_STUDENT, initial)
    try:
        assert dora.try_login() == 200  # the form asks for a new password
        change = re.search(r'name="change" value="([^"]+)"', dora.last_body).group(1)
        new = "Fresh-pw-4-dora!"
        status, body = dora.request("POST", "/hub/login/password", data={
            "_xsrf": dora.xsrf, "change": change, "new_password": new,
            "new_password2": new, "next": "/hub/home"})
        assert status in (302, 303), body[-1500:]
        assert dora.json("GET", "/hub/api/user")["name"] == ROSTER_STUDENT
    finally:
        dora.close()
    shadow = vm.ssh(f"chage -l {ROSTER_STUDENT}").stdout
    assert "password must be changed" not in shadow, shadow
    journal = vm.ssh("journalctl --no-pager -n 50 -u 'notebook-appliance-accounts@*'").stdout
    print(journal[-1500:])
    assert "account helper: password change" in journal


#: About a second of CPU and 200 MiB held at once.
WORK = ("import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass\n"
        "block = bytearray(200 << 20)\nfor i in range(0, len(block), 4096): block[i] = 1\n"
        "len(block)")
USAGE_ROWS = ("python3 -c \"import sqlite3; print(sqlite3.connect("
              "'/var/lib/notebook-appliance/appliance.sqlite').execute("
              "'SELECT user, cause, cpu_seconds, peak_memory FROM usage').fetchall())\"")


def test_usage_is_kept_with_cgroup_figures(vm, people, state):
    """5b. A session's usage row: CPU seconds and peak memory from its cgroup v2, and why it
    stopped (the container tier has no per-unit controllers to read)."""
    need(state, "bob_logged_in")
    bob = people[USER2]
    assert bob.start_server()[-1].get("ready") is True
    assert bob.execute(WORK) == {"result": str(200 << 20)}
    status, _ = bob.request("DELETE", f"/hub/api/users/{USER2}/server")
    assert status in (202, 204)
    rows = wait_for("bob's usage row", lambda: ast.literal_eval(
        vm.ssh(USAGE_ROWS).stdout.strip() or "[]"), 60)
    print(rows)
    [(user, cause, cpu, peak)] = rows
    assert (user, cause) == (USER2, "user")
    assert cpu >= 1.0 and peak >= 200 << 20


def test_oom_kills_kernel_only(vm, people, state):
    """6. A kernel past the memory limit is killed; hub and the other server stay up; told why."""
    need(state, "alice_ready", "bob_logged_in")
    alice, bob = people[USER1], people[USER2]
    events = bob.start_server()
    assert events[-1].get("ready") is True, events
    unit = f"notebook-{USER1}.service"
    cgroup = show(vm, unit, "ControlGroup")["ControlGroup"]
    before = show(vm, unit, "MainPID")["MainPID"]

    # bytes * n writes every page, so the whole allocation counts against MemoryMax.
    out = alice.execute("x = b'x' * (1500 * 2**20); len(x)", timeout=240)
    print("kernel outcome:", out)
    assert "result" not in out, f"a 1.5 GiB allocation succeeded: {out}"
    events_file = vm.ssh(f"cat /sys/fs/cgroup{cgroup}/memory.events").stdout
    print(events_file)
    assert re.search(r"^oom_kill [1-9]", events_file, re.M), events_file

    assert is_active(vm, HUB) == "active"
    # OOMPolicy=continue: the notebook server outlives its kernel.
    assert is_active(vm, unit) == "active"
    assert show(vm, unit, "MainPID")["MainPID"] == before
    assert bob.request("GET", f"/user/{USER2}/api/status")[0] == 200
    assert alice.request("GET", f"/user/{USER1}/api/status")[0] == 200
    state["oom_done"] = True

    def told() -> dict | None:
        model = alice.json("GET", f"/hub/api/users/{USER1}")
        server = model["servers"].get("", {})
        text = " ".join(str(server.get(k) or "") for k in ("notice", "stopped_reason"))
        return model if "memory limit" in text else None

    model = wait_for("the hub to tell the owner about the OOM kill", told, timeout=60)
    print("API:", model["servers"][""])
    status, home = alice.request("GET", "/hub/home")
    assert status == 200 and "memory limit" in home
    # The other user's page says nothing about it.
    assert "memory limit" not in bob.request("GET", "/hub/home")[1]


async def hammer(url: str, stop: asyncio.Event) -> tuple[int, list[str]]:
    """New connections to url until stop is set: (answers, errors)."""
    answers, errors = 0, []
    timeout = aiohttp.ClientTimeout(total=120)
    start = time.monotonic()
    # force_close: a new TCP connection per request, as during a restart clients would make.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                     timeout=timeout) as session:
        while not stop.is_set():
            try:
                async with session.get(url) as r:
                    await r.read()
                    if r.status >= 500:
                        errors.append(f"{time.monotonic() - start:.1f}s: HTTP {r.status}")
                    answers += 1
            # qemu accepts on the host side and then connects to the guest: a connection
            # the guest refuses shows up here as a disconnect or reset, not a refusal.
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                errors.append(f"{time.monotonic() - start:.1f}s: {e!r}")
            await asyncio.sleep(0.05)
    return answers, errors


def restart_under_load(vm, loop, command: str, timeout: float = 600) -> tuple[int, list[str]]:
    """Run a command in the VM while the host keeps connecting to the hub."""

    async def run():
        stop = asyncio.Event()
        load = asyncio.ensure_future(hammer(vm.hub_url + "/hub/api", stop))
        await asyncio.sleep(2)
        try:
            result = await asyncio.get_running_loop().run_in_executor(
                None, lambda: vm.ssh(command, timeout=timeout))
        finally:
            await asyncio.sleep(2)
            stop.set()
        print(result.stdout[-1500:])
        return await load

    return loop.run(run())


def test_hub_restart_keeps_server(vm, loop, people, state):
    """7. A hub restart under load: no refused connections; the server survives, no respawn."""
    need(state, "alice_ready")
    alice = people[USER1]
    unit = f"notebook-{USER1}.service"
    pid = show(vm, unit, "MainPID")["MainPID"]
    hub_pid = show(vm, HUB, "MainPID")["MainPID"]
    started = alice.json("GET", f"/hub/api/users/{USER1}")["servers"][""]["started"]

    answers, errors = restart_under_load(vm, loop, f"systemctl restart {HUB}")
    print(f"{answers} answers during the restart, errors: {errors}")
    assert answers > 0
    assert errors == []
    assert show(vm, HUB, "MainPID")["MainPID"] != hub_pid, "the hub did not restart"
    assert is_active(vm, HUB) == "active"
    assert show(vm, unit, "MainPID")["MainPID"] == pid
    assert alice.request("GET", f"/user/{USER1}/api/status")[0] == 200
    model = alice.json("GET", f"/hub/api/users/{USER1}")
    assert model["servers"][""]["started"] == started, "the server was respawned"
    state["restart_ok"] = True


def test_watchdog_restarts_a_frozen_hub(vm, people, state):
    """7b. A hub whose event loop stops answering is restarted by the watchdog; servers stay."""
    need(state, "restart_ok")
    alice = people[USER1]
    unit = f"notebook-{USER1}.service"
    pid = show(vm, unit, "MainPID")["MainPID"]
    hub_pid = show(vm, HUB, "MainPID")["MainPID"]
    restarts = int(show(vm, HUB, "NRestarts")["NRestarts"])
    # SIGSTOP freezes the hub as a blocked event loop would: no more WATCHDOG=1.
    vm.ssh(f"kill -STOP {hub_pid}")
    wait_for("the watchdog to restart the hub", lambda: (
        show(vm, HUB, "MainPID")["MainPID"] not in (hub_pid, "0")
        and is_active(vm, HUB) == "active"), timeout=240, every=5)
    journal = vm.ssh(f"journalctl -u {HUB} --no-pager -n 40").stdout
    print(journal[-2000:])
    assert "Watchdog timeout" in journal
    assert int(show(vm, HUB, "NRestarts")["NRestarts"]) > restarts
    assert show(vm, unit, "MainPID")["MainPID"] == pid
    assert wait_for("alice's server through the restarted hub", lambda: alice.request(
        "GET", f"/user/{USER1}/api/status")[0] == 200, timeout=120)


def test_a_managed_service_from_the_installed_package(vm, state):
    """7c. A JupyterHub service in the config, as a sysadmin adds one: the installed hub runs
    it in its slice with JupyterHub's environment (the API on loopback, where the socket
    listens) and its own token, which the hub's sandbox let it write and systemctl show never
    shows; /services/echo/ reaches it; taken out of the config, it is stopped."""
    need(state, "installed")
    unit, token_file = "notebook-appliance-service-echo.service", \
        "/run/notebook-appliance/services/echo.token"
    vm.copy_in(Path(__file__).parents[1] / "integration" / "echo_service.py",
               "/usr/local/lib/echo_service.py")
    vm.ssh(f"cp -p {CONFIG} /root/appliance.toml.before")
    vm.ssh(f"cat >> {CONFIG}", input='\n[services.echo]\ncommand = ["/usr/bin/python3", '
           '"/usr/local/lib/echo_service.py"]\nurl = "http://127.0.0.1:10101"\n')
    try:
        vm.ssh(f"systemctl restart {HUB}")
        assert wait_for("the hub to be active", lambda: is_active(vm, HUB) == "active")

        def answer():
            status, _, body = vm.ssh(fetch_in_vm("http://127.0.0.1:8000/services/echo/env"),
                                     check=False).stdout.partition("\n")
            return json.loads(body) if status.strip() == "200" else None
        seen = wait_for("the service through the hub", answer, timeout=120)
        print(seen)
        assert seen["env"]["JUPYTERHUB_API_URL"] in ("http://[::1]:8000/hub/api",
                                                     "http://127.0.0.1:8000/hub/api")
        assert seen["whoami"]["kind"] == "service" and seen["whoami"]["name"] == "echo"
        assert seen["uid"] != 0
        assert show(vm, unit, "Slice")["Slice"] == "notebook_appliance_services.slice"
        assert vm.ssh(f"stat -c '%a %U' {token_file}").stdout.split() == ["400", "root"]
        token = vm.ssh(f"cat {token_file}").stdout.strip()
        assert len(token) > 20
        assert token not in vm.ssh(f"systemctl show {unit}").stdout
        assert token not in vm.ssh(f"journalctl -u {unit} -o verbose --no-pager").stdout
        assert token not in vm.ssh(f"journalctl -u {HUB} -o verbose --no-pager").stdout
    finally:
        vm.ssh(f"cp -p /root/appliance.toml.before {CONFIG}")
        vm.ssh(f"systemctl restart {HUB}")
    assert wait_for("the hub to be active", lambda: is_active(vm, HUB) == "active")
    assert is_active(vm, unit) in ("inactive", "unknown")
    assert vm.ssh(f"test -e {token_file}", check=False).returncode != 0


def test_upgrade_keeps_server_and_config(vm, loop, people, upgrade_deb, state):
    """8. apt install of a higher version: hub restarted, server kept, config edit kept."""
    need(state, "alice_ready")
    alice = people[USER1]
    unit = f"notebook-{USER1}.service"
    pid = show(vm, unit, "MainPID")["MainPID"]
    hub_pid = show(vm, HUB, "MainPID")["MainPID"]
    vm.ssh(f"sed -i 's/^session_max_age = .*/session_max_age = \"7d\"/' {CONFIG}")
    vm.copy_in(upgrade_deb, "/root/")

    answers, errors = restart_under_load(
        # --force-confold: when the shipped appliance.toml changed too (a new key), keep the
        # sysadmin's edited one, as an unattended upgrade does, instead of asking.
        vm, loop, "cd /root && DEBIAN_FRONTEND=noninteractive apt install -y "
                  f"-o Dpkg::Options::=--force-confold ./{upgrade_deb.name}")
    print(f"{answers} answers during the upgrade, errors: {errors}")
    version = vm.ssh("dpkg-query -W -f '${Version}' notebook-appliance").stdout
    assert upgrade_deb.name.split("_")[1] == version.split(":")[-1]
    assert wait_for("the hub to be active", lambda: is_active(vm, HUB) == "active")
    assert show(vm, HUB, "MainPID")["MainPID"] != hub_pid, "the upgrade did not restart the hub"
    assert show(vm, unit, "MainPID")["MainPID"] == pid
    assert vm.ssh(f"grep -x 'session_max_age = \"7d\"' {CONFIG}", check=False).returncode == 0
    assert alice.request("GET", f"/user/{USER1}/api/status")[0] == 200
    assert errors == []


def test_the_real_idle_culler_against_the_installed_hub(vm, people, state, tmp_path):
    """8b. jupyterhub-idle-culler 2.0.0 from PyPI, unmodified, as the README sets it up (a
    service and a role with its documented scopes) on the installed hub: it culls bob's idle
    server, leaves alice's (in use) alone, and its token cannot open alice's server."""
    need(state, "alice_ready", "bob_logged_in")
    alice, bob = people[USER1], people[USER2]
    unit = "notebook-appliance-service-idle-culler.service"
    token_file = "/run/notebook-appliance/services/idle-culler.token"
    if is_active(vm, f"notebook-{USER2}.service") != "active":
        assert bob.start_server()[-1].get("ready") is True
    venv = pypi_venv(vm, "venv", tmp_path)
    argv = [f"{venv}/bin/python3", "-m", "jupyterhub_idle_culler", "--timeout=90",
            "--cull-every=10"]
    vm.ssh(f"cp -p {CONFIG} /root/appliance.toml.before")
    vm.ssh(f"cat >> {CONFIG}", input=(
        f"\n[services.idle-culler]\ncommand = {json.dumps(argv)}\n"
        '[roles.idle-culler]\nscopes = ["list:users", "read:users:activity", '
        '"read:servers", "delete:servers"]\nservices = ["idle-culler"]\n'))
    try:
        # alice has just worked (her server is in use: the culler's first round comes within
        # its 90 s), bob not for minutes.
        assert alice.request("GET", f"/user/{USER1}/api/status")[0] == 200
        vm.ssh(f"systemctl restart {HUB}")
        assert wait_for("the hub to be active", lambda: is_active(vm, HUB) == "active")
        assert wait_for("the culler to run", lambda: is_active(vm, unit) == "active")

        def bob_culled() -> bool:
            # alice works meanwhile: her server is in use, through the hub's proxy (the
            # first request may meet a connection the restarted hub closed).
            try:
                status = alice.request("GET", f"/user/{USER1}/api/status")[0]
            except aiohttp.ServerDisconnectedError:
                return False
            assert status == 200, (status, vm.ssh(f"journalctl -u {unit} -o cat --no-pager")
                                   .stdout[-3000:])
            return is_active(vm, f"notebook-{USER2}.service") != "active"
        wait_for("the culler to stop bob's idle server", bob_culled, timeout=400, every=5)
        journal = vm.ssh(f"journalctl -u {unit} -o cat --no-pager").stdout
        print(journal[-3000:])
        assert f"Culling server {USER2}" in journal, journal[-3000:]
        assert is_active(vm, f"notebook-{USER1}.service") == "active"
        assert f"Culling server {USER1}" not in journal
        token = vm.ssh(f"cat {token_file}").stdout.strip()
        headers = {"Authorization": f"token {token}"}
        status, _ = alice.loop.run(bare_request(vm.hub_url, f"/user/{USER1}/api/status",
                                                headers))
        assert status == 403, status
        status, _ = alice.loop.run(bare_request(vm.hub_url, "/hub/api/users", headers))
        assert status == 200, status
    finally:
        vm.ssh(f"cp -p /root/appliance.toml.before {CONFIG}")
        vm.ssh(f"systemctl restart {HUB}")
    assert wait_for("the hub to be active", lambda: is_active(vm, HUB) == "active")
    assert wait_for("the culler to be stopped", lambda: is_active(vm, unit) != "active")


def test_a_hub_oauth_service_on_the_installed_hub(vm, people, state, tmp_path):
    """8c. JupyterHub's whoami-oauth example (HubOAuthenticated, JupyterHub 6.1.1 from PyPI,
    unmodified) as a managed service with `oauth = true` on the installed hub: alice goes
    through the OAuth dance (the hub's confirmation page once) and the service knows her;
    bob, without the role, is refused."""
    need(state, "alice_ready", "bob_logged_in")
    alice, bob = people[USER1], people[USER2]
    venv = pypi_venv(vm, "hub", tmp_path)
    vm.copy_in(Path(__file__).parents[1] / "integration" / "jupyterhub_examples" /
               "whoami-oauth.py", "/usr/local/lib/whoami-oauth.py")
    vm.ssh(f"cp -p {CONFIG} /root/appliance.toml.before")
    vm.ssh(f"cat >> {CONFIG}", input=(
        f'\n[services.whoami]\ncommand = ["{venv}/bin/python3", '
        '"/usr/local/lib/whoami-oauth.py"]\nurl = "http://127.0.0.1:10102"\noauth = true\n'
        '[roles.whoami-users]\nscopes = ["access:services!service=whoami"]\n'
        f'users = ["{USER1}"]\n'))
    try:
        vm.ssh(f"systemctl restart {HUB}")
        assert wait_for("the hub to be active", lambda: is_active(vm, HUB) == "active")

        def listening() -> bool:
            return vm.ssh(fetch_in_vm("http://127.0.0.1:10102/services/whoami/"),
                          check=False).stdout.split("\n")[0].strip() not in ("", "0")
        wait_for("whoami-oauth to listen", listening, timeout=180)
        status, body, seen = visit_service(alice, "/services/whoami/")
        assert status == 200, (status, body[:500], seen)
        assert json.loads(body)["name"] == USER1
        assert any(p.startswith("/hub/api/oauth2/authorize") for p in seen), seen
        status, body, seen = visit_service(bob, "/services/whoami/")
        assert status == 403, (status, body[:500], seen)
    finally:
        vm.ssh(f"cp -p /root/appliance.toml.before {CONFIG}")
        vm.ssh(f"systemctl restart {HUB}")
    assert wait_for("the hub to be active", lambda: is_active(vm, HUB) == "active")


def test_jupyterhub_singleuser_with_lab_on_the_installed_hub(vm, loop, state, tmp_path):
    """8d. jupyterhub-singleuser with JupyterLab 4 (PyPI, a venv copied into the guest) as a
    profile's command on the installed hub: the server logs its browser in through the
    hub's OAuth by itself, Lab's page loads through the proxy, a cell runs over the proxied
    kernel websocket, and the hub has the server's activity."""
    need(state, "installed")
    venv = pypi_venv(vm, "singleuser", tmp_path)
    name = "dave"
    vm.ssh(f"useradd -m -s /bin/bash {name}")
    dave = Person(loop, vm.hub_url, name, f"pw-{name}-Xy7!")
    vm.ssh("chpasswd", input=f"{name}:{dave.password}\n")
    vm.ssh(f"cp -p {CONFIG} /root/appliance.toml.before")
    # Lab's first start under the guest's software emulation is slow: more than 120 s.
    vm.ssh(f"sed -i 's/^start_timeout = .*/start_timeout = \"600s\"/' {CONFIG}")
    vm.ssh(f"cat >> {CONFIG}", input=(
        f'\n[profiles.lab]\ndescription = "JupyterLab 4"\ndefault = true\n'
        f'command = ["{venv}/bin/jupyterhub-singleuser"]\ndefault_url = "/lab"\n'))
    try:
        vm.ssh(f"systemctl restart {HUB}")
        assert wait_for("the hub to be active", lambda: is_active(vm, HUB) == "active")
        dave.login()
        events = dave.start_server()
        assert events[-1].get("ready") is True, (events, vm.ssh(
            f"journalctl -u notebook-{name} -o cat --no-pager", check=False).stdout[-3000:])
        status, body, seen = visit_service(dave, f"/user/{name}/lab")
        assert status == 200 and "JupyterLab" in body, (status, body[:500], seen)
        assert any(p.startswith("/hub/api/oauth2/authorize") for p in seen), seen
        assert any(p.startswith(f"/user/{name}/oauth_callback") for p in seen), seen
        xsrf = dave.cookie("_xsrf")
        assert xsrf, "Lab's page set no _xsrf cookie"
        assert dave.execute("6*7", timeout=300, headers={"X-XSRFToken": xsrf}) == {
            "result": "42"}
        model = dave.json("GET", f"/hub/api/users/{name}")
        assert model["servers"][""]["last_activity"], model
        status, _ = dave.request("DELETE", f"/hub/api/users/{name}/server")
        assert status in (202, 204)
    finally:
        dave.close()
        vm.ssh(f"cp -p /root/appliance.toml.before {CONFIG}")
        vm.ssh(f"systemctl restart {HUB}")
    assert wait_for("the hub to be active", lambda: is_active(vm, HUB) == "active")


async def bare_request(base: str, path: str, headers: dict) -> tuple[int, str]:
    """One GET without any cookie: only the headers' credentials count."""
    async with aiohttp.ClientSession() as session:
        async with session.get(base + path, headers=headers, allow_redirects=False) as r:
            return r.status, await r.text()


def test_purge(vm, state):
    """9. apt purge: hub and state gone; homes and /srv/data contents kept."""
    need(state, "installed")
    vm.ssh("touch /home/alice/my-notebook.ipynb")
    vm.ssh("DEBIAN_FRONTEND=noninteractive apt purge -y notebook-appliance", timeout=600)
    assert is_active(vm, HUB) != "active"
    assert vm.ssh(f"systemctl cat {HUB}.service", check=False).returncode != 0
    assert vm.ssh("test -e /var/lib/notebook-appliance", check=False).returncode != 0
    assert vm.ssh("test -e /etc/notebook-appliance", check=False).returncode != 0
    assert vm.ssh("test -f /home/alice/my-notebook.ipynb").returncode == 0
    assert vm.ssh(f"cat {DATA_FILE}").stdout.strip() == DATA_TEXT
