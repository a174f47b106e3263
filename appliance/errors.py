"""Typed errors of the appliance; HTTP translation happens in one place (app.py)."""


class ApplianceError(Exception):
    """Base of every error this package raises on purpose."""

    #: HTTP status the web layer answers with when this error reaches it.
    status = 500

    def __init__(self, message: str, *, user_message: str | None = None):
        super().__init__(message)
        #: A short, kind sentence safe to show to any browser.
        self.user_message = user_message or message
        #: Whether user_message was written for people (else it is the raw message, which a
        #: 5xx page never shows: it may carry a D-Bus or Python error's own text).
        self.written_for_people = user_message is not None


class ConfigError(ApplianceError):
    """The configuration file is missing, malformed or has a bad value."""


class AuthError(ApplianceError):
    """Login refused; the message never says whether the account exists."""

    status = 403


class PasswordExpired(AuthError):
    """The password was right but has expired (pam_acct_mgmt: PAM_NEW_AUTHTOK_REQD): the user
    must choose a new one before logging in."""

    status = 200

    def __init__(self, name: str):
        super().__init__(f"{name!r} must change an expired password",
                         user_message="Your password has expired: please choose a new one.")
        self.name = name


class TooManyAttempts(AuthError):
    """Login throttled after repeated failures; retry_after says for how long (seconds)."""

    status = 429

    def __init__(self, message: str, *, retry_after: float, user_message: str | None = None):
        super().__init__(message, user_message=user_message)
        self.retry_after = retry_after


class Busy(ApplianceError):
    """Too much work waiting (the PAM queue is full); retry_after in seconds."""

    status = 503

    def __init__(self, message: str, *, retry_after: float, user_message: str | None = None):
        super().__init__(message, user_message=user_message)
        self.retry_after = retry_after


class NotAuthenticated(ApplianceError):
    """No valid session cookie or API token came with the request."""

    status = 401


class Forbidden(ApplianceError):
    """Authenticated, but not allowed to do this."""

    status = 403


class NotFound(ApplianceError):
    """No such user, server or page."""

    status = 404


class BadRequest(ApplianceError):
    """The request is malformed (bad path, bad form, failed CSRF check)."""

    status = 400


class Conflict(ApplianceError):
    """The request clashes with the server's state (already running, not running)."""

    status = 400


class Exists(ApplianceError):
    """What a request would create exists already (a user, a group: JupyterHub's 409)."""

    status = 409


class ServerNotRunning(ApplianceError):
    """A proxied API request reached a server that is not running (JupyterHub: 424)."""

    status = 424


class SpawnError(ApplianceError):
    """A notebook server failed to start, or died; the message says why."""

    status = 500


class SystemdError(ApplianceError):
    """systemd refused or failed a D-Bus call; carries the D-Bus error name."""

    status = 503

    def __init__(self, message: str, *, dbus_name: str = "", user_message: str | None = None):
        super().__init__(message, user_message=user_message)
        self.dbus_name = dbus_name


class NoSuchUnit(SystemdError):
    """systemd does not know the unit (org.freedesktop.systemd1.NoSuchUnit)."""


class UpstreamError(ApplianceError):
    """A user's notebook server or a service could not be reached (or not safely)."""

    status = 502
