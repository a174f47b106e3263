"""Built-in TLS: the real `notebook-appliance serve` with hub.ssl_cert/ssl_key, redirect_port."""

import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from tests.ports import free_ports

from .browser import Browser
from .conftest import booted, wait_listening

pytestmark = [pytest.mark.systemd, pytest.mark.pam]


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and its key, made by openssl."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def tls_hub(tmp_path, hub_config, serve_hub):
    """Factory: run `serve` on TLS with a redirect port; returns (https base, http base, ctx)."""

    async def _start():
        cert, key = self_signed(tmp_path, "hub")
        port, redirect = free_ports(2)  # two at once: never the same one twice
        cfg = hub_config(hub={"port": port, "ssl_cert": str(cert), "ssl_key": str(key),
                              "redirect_port": redirect})
        proc = await serve_hub(cfg)
        await wait_listening(redirect, proc)
        trust = ssl.create_default_context(cafile=str(cert))
        return f"https://127.0.0.1:{port}", f"http://127.0.0.1:{redirect}", trust

    return _start


@pytest.mark.skipif(not booted(), reason="creates users; only in the throwaway container")
async def test_tls_login_sets_a_secure_cookie_and_http_is_redirected(tls_hub, make_user):
    alice = make_user()
    https, http, trust = await tls_hub()
    async with Browser(https, tls=trust) as a:
        r = await a.login(alice.name, alice.password)
        assert r.status == 302 and r.headers["Location"] == "/hub/home"
        session = [v for v in r.headers.getall("Set-Cookie") if "appliance-session" in v][0]
        assert "Secure" in session and "HttpOnly" in session and "Path=/" in session
        # __Host-: the browser takes it only Secure, for /, without Domain (RFC 6265bis).
        assert session.startswith("__Host-appliance-session=") and "Domain" not in session
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
