"""Jupyter config loaded by every user's notebook server (`--config=` this file).

It runs inside the user's server, as the user, and takes everything from the environment the
hub set in the unit, except the token: that is read from a file only the user (and root) can
open, so it never appears in `systemctl show`, on a command line or in /proc/*/environ.
Works for Debian's jupyter-notebook 6.4 (NotebookApp) and jupyter_server 1.23 (ServerApp).
"""

import os

c = get_config()  # noqa: F821 -- injected by traitlets when it runs this file

with open(os.environ["APPLIANCE_TOKEN_FILE"], encoding="ascii") as _f:
    _token = _f.read().strip()

for _app in (c.NotebookApp, c.ServerApp):
    _app.sock = os.environ["APPLIANCE_SOCKET"]
    # Only the owner may connect; the hub is root (jupyter's default is also 0600).
    _app.sock_mode = "0600"
    _app.base_url = os.environ["APPLIANCE_BASE_URL"]
    _app.default_url = os.environ.get("APPLIANCE_DEFAULT_URL", "/tree")
    _app.token = _token
    _app.password = ""
    _app.open_browser = False
    # Reached only through the hub over a 0600 socket; the browser's Host header is kept.
    _app.allow_remote_access = True
    # The hub starts and stops servers; a Quit button would leave the hub confused.
    _app.quit_button = False
    # Shown inside the hub's pages only; never framed by other sites.
    _app.tornado_settings = {
        "headers": {"Content-Security-Policy": "frame-ancestors 'self'"},
    }
del _app, _token

if os.environ.get("APPLIANCE_KERNEL_TRANSPORT") == "ipc":
    # Kernels on UNIX sockets beside their connection files (units.py says why).
    c.KernelManager.transport = "ipc"
