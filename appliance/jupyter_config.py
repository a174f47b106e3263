"""Jupyter config loaded by every user's notebook server (`--config=` this file).

It runs inside the user's server, as the user, and takes everything from the environment the
hub set in the unit, except the token: that is read from a file only the user (and root) can
open, so it never appears in `systemctl show` or on a command line (secretenv.py, the unit's
ExecStart, also puts it in $JUPYTERHUB_API_TOKEN, which only the user and root can read in
/proc). Works for Debian's jupyter-notebook 6.4 (NotebookApp), jupyter_server 1.23
(ServerApp) and jupyterhub-singleuser with jupyter_server 2.
"""

import os

c = get_config()  # noqa: F821 -- injected by traitlets when it runs this file

# jupyterhub-singleuser (APPLIANCE_HUB_OAUTH, units.py) logs browsers in through the hub's
# OAuth and checks tokens with the hub: its own identity provider then owns the token, and
# JupyterHub's extension takes the base URL and port from $JUPYTERHUB_SERVICE_PREFIX and
# $JUPYTERHUB_SERVICE_URL (hubenv.py). Any other server is reached only through the hub,
# which authenticates the browser and hands this token on.
_hub_oauth = os.environ.get("APPLIANCE_HUB_OAUTH") == "1"
if not _hub_oauth:
    with open(os.environ["APPLIANCE_TOKEN_FILE"], encoding="ascii") as _f:
        _token = _f.read().strip()

for _app in (c.NotebookApp, c.ServerApp):
    _app.sock = os.environ["APPLIANCE_SOCKET"]
    # Only the owner may connect; the hub is root (jupyter's default is also 0600).
    _app.sock_mode = "0600"
    _app.base_url = os.environ["APPLIANCE_BASE_URL"]
    _app.default_url = os.environ.get("APPLIANCE_DEFAULT_URL", "/tree")
    if not _hub_oauth:
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
del _app
if not _hub_oauth:
    del _token

if os.environ.get("APPLIANCE_KERNEL_TRANSPORT") == "ipc":
    # Kernels on UNIX sockets beside their connection files (units.py says why).
    c.KernelManager.transport = "ipc"
