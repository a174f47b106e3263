"""Built-in TLS: the real `notebook-appliance serve` with hub.ssl_cert/ssl_key, redirect_port."""

import asyncio
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from .browser import Browser
from .conftest import booted

pytestmark = [pytest.mark.systemd, pytest.mark.pam]


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and its key, made by openssl."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


async def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Until something accepts on port; fail early if the hub exited."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            assert asyncio.get_running_loop().time() < deadline, "hub did not listen"
            await asyncio.sleep(0.2)


@pytest.fixture
def tls_hub(tmp_path, hub_config):
    """Factory: run `serve` on TLS with a redirect port; returns (https base, http base, ctx)."""
    procs = []

    async def _start():
        cert, key = self_signed(tmp_path, "hub")
        port, redirect = free_port(), free_port()
        cfg = hub_config(hub={"port": port, "ssl_cert": str(cert), "ssl_key": str(key),
                              "redirect_port": redirect})
        proc = subprocess.Popen([sys.executable, "-m", "appliance", "--config", cfg.source,
                                 "serve"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        procs.append(proc)
        await wait_listening(port, proc)
        await wait_listening(redirect, proc)
        trust = ssl.create_default_context(cafile=str(cert))
        return f"https://127.0.0.1:{port}", f"http://127.0.0.1:{redirect}", trust

    yield _start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=40)


@pytest.mark.skipif(not booted(), reason="creates users; only in the throwaway container")
async def test_tls_login_sets_a_secure_cookie_and_http_is_redirected(tls_hub, make_user):
    alice = make_user()
    https, http, trust = await tls_hub()
    async with Browser(https, tls=trust) as a:
        r = await a.login(alice.name, alice.password)
        assert r.status == 302 and r.headers["Location"] == "/hub/home"
        session = [v for v in r.headers.getall("Set-Cookie") if "appliance-session" in v][0]
        assert "Secure" in session and "HttpOnly" in session
        async with a.request("GET", "/hub/home") as r:
            assert r.status == 200 and alice.name in await r.text()
    async with aiohttp.ClientSession() as plain:
        async with plain.get(f"{http}/hub/login?next=%2Fhub%2Fhome",
                             allow_redirects=False) as r:
            assert r.status == 301
            # yarl may write %2F as / in a query: the same URL
            assert URL(r.headers["Location"]) == URL(f"{https}/hub/login?next=%2Fhub%2Fhome")
        with pytest.raises(aiohttp.ClientError):  # plain HTTP on the TLS port gets no page
            async with plain.get(f"{https.replace('https', 'http')}/hub/login") as r:
                await r.read()


def test_a_key_that_does_not_match_stops_the_hub_naming_the_keys(tmp_path):
    cert, _ = self_signed(tmp_path, "one")
    _, other_key = self_signed(tmp_path, "two")
    path = tmp_path / "appliance.toml"
    path.write_text(f'[hub]\nssl_cert = "{cert}"\nssl_key = "{other_key}"\n')
    for verb in ("check-config", "serve"):
        out = subprocess.run([sys.executable, "-m", "appliance", "--config", str(path), verb],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, out.stderr
        assert f"{path}: hub.ssl_cert/hub.ssl_key: cannot load {cert} with {other_key}: " \
               "key values mismatch" in out.stderr


def test_a_missing_certificate_file_is_named(tmp_path):
    path = tmp_path / "appliance.toml"
    path.write_text('[hub]\nssl_cert = "/nonexistent/hub.pem"\nssl_key = "/nonexistent/hub.key"\n')
    out = subprocess.run([sys.executable, "-m", "appliance", "check-config", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "hub.ssl_cert/hub.ssl_key: cannot load /nonexistent/hub.pem" in out.stderr
    assert "No such file or directory" in out.stderr
