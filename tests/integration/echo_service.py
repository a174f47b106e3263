"""A tiny JupyterHub web service for the services tests, run by the hub as a managed service
(stdlib only, as whatever user systemd gives it).

It serves under $JUPYTERHUB_SERVICE_PREFIX at $JUPYTERHUB_SERVICE_URL (a loopback port or
unix:<path>): GET <prefix>env answers the JUPYTERHUB_* environment it was given (never the
token itself, only whether it had one), what the hub's GET /hub/api/user says to its token,
and the Authorization and Cookie headers the proxy passed on.
"""

import http.server
import json
import os
import socketserver
import urllib.request


def whoami() -> object:
    """The hub's answer to GET /hub/api/user with this service's own token."""
    request = urllib.request.Request(os.environ["JUPYTERHUB_API_URL"] + "/user", headers={
        "Authorization": "token " + os.environ["JUPYTERHUB_API_TOKEN"]})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)
    except OSError as e:
        return {"error": str(e)}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != os.environ["JUPYTERHUB_SERVICE_PREFIX"] + "env":
            self.send_error(404)
            return
        env = {k: v for k, v in os.environ.items()
               if k.startswith("JUPYTERHUB_") and k != "JUPYTERHUB_API_TOKEN"}
        body = json.dumps({
            "env": env, "has_token": bool(os.environ.get("JUPYTERHUB_API_TOKEN")),
            "whoami": whoami(), "uid": os.getuid(),
            "authorization": self.headers.get("Authorization"),
            "cookie": self.headers.get("Cookie"),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        """Nothing per request (a UNIX socket's client has no address to print)."""


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def main() -> None:
    url = os.environ["JUPYTERHUB_SERVICE_URL"]
    if url.startswith("unix:"):
        server = UnixServer(url[len("unix:"):], Handler)
    else:
        host, _, port = url[len("http://"):].rstrip("/").rpartition(":")
        server = http.server.ThreadingHTTPServer((host.strip("[]"), int(port)), Handler)
    print("echo service listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
