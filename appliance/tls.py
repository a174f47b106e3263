"""Built-in TLS: the server context from hub.ssl_cert/ssl_key, loaded once at start."""

import ssl

from appliance.config import Config
from appliance.errors import ConfigError


def server_context(cfg: Config) -> ssl.SSLContext | None:
    """TLS for the hub's listener, or None for plain HTTP.

    A missing, unreadable or mismatched certificate or key stops the hub with a ConfigError
    naming the config file, the key and the file it points to.
    """
    hub = cfg.hub
    if hub.ssl_cert is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(hub.ssl_cert, hub.ssl_key)
    except OSError as e:  # ssl.SSLError is an OSError too
        raise ConfigError(f"{cfg.source or 'built-in defaults'}: hub.ssl_cert/hub.ssl_key: "
                          f"cannot load {hub.ssl_cert} with {hub.ssl_key}: "
                          f"{_reason(e)}") from e
    return ctx


def _reason(e: OSError) -> str:
    """A short human reason: "No such file or directory", "key values mismatch"."""
    if isinstance(e, ssl.SSLError) and e.reason:
        return e.reason.replace("_", " ").lower()
    return e.strerror or str(e)
