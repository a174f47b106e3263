"""Stands in for PyGObject (gi) in every notebook server.

The notebook server imports send2trash, which moves deleted files to the trash through GLib's
Gio when `gi` imports and otherwise through its own implementation of the same freedesktop.org
trash specification (send2trash/__init__.py says so). Gio loads GLib, GObject and their type
system into each server: about 6 MiB per student, measured, for the same result.
"""

raise ImportError("gi is left out of notebook servers: send2trash uses its own "
                  "freedesktop.org trash instead of GLib's")
