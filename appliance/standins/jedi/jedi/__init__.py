"""Stands in for jedi in kernels whose profile has jedi = false (the default).

On PYTHONPATH ahead of the real one, so IPython's `import jedi` fails and its completer uses
its own matchers, as where jedi is not installed: Tab still completes names, attributes, keys
and paths; jedi's type inference (completing on a call's result, parameter names) is what goes.
jedi and parso cost about 5 MiB in every kernel, measured. Turn spawner.jedi (or a profile's
jedi) on to get the real one.
"""

raise ImportError("jedi is off on this hub: the server's profile has jedi = false "
                  "(spawner.jedi in /etc/notebook-appliance/appliance.toml)")
