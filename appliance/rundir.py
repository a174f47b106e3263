"""Each server's private run directory: the socket's home and the 0400 token file.

<runtime_dir>/users/<user>/ belongs to the user, mode 0700, so only they and root can reach
the socket; the token never appears on a command line or in the unit's properties.
"""

import hashlib
import hmac
import os
import shutil

from appliance import units


def server_token(secret: bytes, unit: str, started: float | None) -> str:
    """A server's token, derived from the hub secret so a restarted hub knows it again."""
    msg = f"{unit}:{started!r}".encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


def prepare_directory(paths: units.ServerPaths, uid: int, gid: int, token: str) -> None:
    """Create the server's private directory (0700, the user's) and its 0400 token file."""
    paths.directory.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
    remove_directory(paths)
    paths.directory.mkdir(mode=0o700)
    os.chown(paths.directory, uid, gid)
    fd = os.open(paths.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
    try:
        os.write(fd, token.encode())
        os.fchown(fd, uid, gid)
    finally:
        os.close(fd)


def remove_directory(paths: units.ServerPaths) -> None:
    """Remove a server's private directory (rmtree never follows the user's symlinks)."""
    if paths.directory.is_symlink():
        paths.directory.unlink()
    elif paths.directory.exists():
        shutil.rmtree(paths.directory)
