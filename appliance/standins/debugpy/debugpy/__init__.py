"""Stands in for debugpy in servers whose profile has no debugger (spawner.debugger = false).

On PYTHONPATH ahead of the real one, so ipykernel's `import debugpy` fails and it runs without
its debugger, as it does where debugpy is not installed. Turn spawner.debugger (or a profile's
debugger) on to get the real one, e.g. for JupyterLab's debugger panel.
"""

raise ImportError("debugpy is off on this hub: the server's profile has debugger = false "
                  "(spawner.debugger in /etc/notebook-appliance/appliance.toml)")
