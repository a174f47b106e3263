"""The hub's state in sqlite (WAL): users, sessions, API tokens (hashed), servers and groups.

Every query runs on one dedicated thread, so the event loop never waits on the disk and the
single connection is never shared between threads.
"""

import asyncio
import hashlib
import json
import secrets
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    admin INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    last_activity REAL
);
CREATE TABLE IF NOT EXISTS sessions (
    hash TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    created REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    note TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    last_used REAL
);
CREATE TABLE IF NOT EXISTS servers (
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    name TEXT NOT NULL DEFAULT '',
    unit TEXT NOT NULL,
    socket TEXT NOT NULL,
    state TEXT NOT NULL,
    started REAL,
    last_activity REAL,
    message TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (user, name)
);
"""
#: Each step brings a database from version N-1 to N (index N-2).
_MIGRATIONS = (
    # 2: the profile a server was started with, so a restarted hub shows and keeps it.
    "ALTER TABLE servers ADD COLUMN profile TEXT NOT NULL DEFAULT ''",
    # 3: tokens get an id that is never reused (to list and revoke them) and an expiry.
    """
    CREATE TABLE tokens_v3 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        hash TEXT NOT NULL UNIQUE,
        user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        note TEXT NOT NULL DEFAULT '',
        created REAL NOT NULL,
        last_used REAL,
        expires REAL
    );
    INSERT INTO tokens_v3(hash, user, note, created, last_used)
        SELECT hash, user, note, created, last_used FROM tokens;
    DROP TABLE tokens;
    ALTER TABLE tokens_v3 RENAME TO tokens;
    """,
    # 4: sessions on a user's own host (per-user origins) say which host; '' is the hub's.
    "ALTER TABLE sessions ADD COLUMN host TEXT NOT NULL DEFAULT ''",
    # 5: usage history: one row per server session, written when it ends.
    """
    CREATE TABLE usage (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user TEXT NOT NULL,
        server TEXT NOT NULL DEFAULT '',
        profile TEXT NOT NULL DEFAULT '',
        started REAL NOT NULL,
        stopped REAL NOT NULL,
        cause TEXT NOT NULL,
        cpu_seconds REAL,
        peak_memory INTEGER
    );
    CREATE INDEX usage_stopped ON usage(stopped);
    """,
    # 6: scopes per token (JupyterHub's; tokens made before meant "inherit", and still do),
    # and hub groups (JupyterHub's /groups): a name, free-form properties, member users.
    """
    ALTER TABLE tokens ADD COLUMN scopes TEXT NOT NULL DEFAULT '["inherit"]';
    CREATE TABLE groups (
        name TEXT PRIMARY KEY,
        properties TEXT NOT NULL DEFAULT '{}',
        created REAL NOT NULL
    );
    CREATE TABLE group_members (
        grp TEXT NOT NULL REFERENCES groups(name) ON DELETE CASCADE,
        user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        PRIMARY KEY (grp, user)
    );
    """,
    # 7: a token is a user's or a service's (JupyterHub's APIToken.user / .service): user
    # may be NULL now, which needs a new table; ids go on from where they were (never reused).
    """
    CREATE TABLE tokens_v7 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        hash TEXT NOT NULL UNIQUE,
        user TEXT REFERENCES users(name) ON DELETE CASCADE,
        service TEXT,
        note TEXT NOT NULL DEFAULT '',
        created REAL NOT NULL,
        last_used REAL,
        expires REAL,
        scopes TEXT NOT NULL DEFAULT '["inherit"]',
        CHECK ((user IS NULL) != (service IS NULL))
    );
    INSERT INTO tokens_v7(id, hash, user, note, created, last_used, expires, scopes)
        SELECT id, hash, user, note, created, last_used, expires, scopes FROM tokens;
    DELETE FROM sqlite_sequence WHERE name='tokens_v7';
    INSERT INTO sqlite_sequence(name, seq) SELECT 'tokens_v7', seq FROM
        (SELECT MAX(seq) AS seq FROM sqlite_sequence WHERE name='tokens') WHERE seq IS NOT NULL;
    DROP TABLE tokens;
    ALTER TABLE tokens_v7 RENAME TO tokens;
    CREATE INDEX tokens_service ON tokens(service);
    """,
    # 8: OAuth (JupyterHub's provider): the client a token was issued to ('' = the hub
    # itself), and the hash of the hub session it was issued in (logging out revokes it).
    """
    ALTER TABLE tokens ADD COLUMN client TEXT NOT NULL DEFAULT '';
    ALTER TABLE tokens ADD COLUMN session TEXT NOT NULL DEFAULT '';
    CREATE INDEX tokens_session ON tokens(session) WHERE session != '';
    """,
)
#: The schema this hub writes: _SCHEMA is version 1, and each migration one more (counted,
#: so two branches that each add a step cannot leave it behind).
SCHEMA_VERSION = 1 + len(_MIGRATIONS)
#: A token's columns in TokenRecord's order (never its hash).
_TOKEN_COLUMNS = "id, user, note, created, last_used, expires, scopes, service, client"
#: A user's columns in UserRecord's order; rowid is JupyterHub's user id (creation order).
_USER_COLUMNS = "name, admin, created, last_activity, rowid"
#: The note a server's own token has ("Server at /user/alice/", JupyterHub's).
SERVER_TOKEN_NOTE = "Server at "
#: A token's last_used is written at most this often (seconds): a busy tool is not a write
#: per request.
LAST_USED_EVERY = 60.0


@dataclass(frozen=True)
class UserRecord:
    """A user the hub has seen log in."""

    name: str
    admin: bool
    created: float
    last_activity: float | None
    #: The order users came to the hub in (JupyterHub's ?sort=id).
    id: int = 0


def _user_record(row: tuple) -> UserRecord:
    return UserRecord(row[0], bool(row[1]), *row[2:])


@dataclass(frozen=True)
class GroupRecord:
    """A hub group made through the API (JupyterHub's group model)."""

    name: str
    properties: dict
    users: tuple[str, ...]


@dataclass(frozen=True)
class TokenRecord:
    """An API token as listed: never the token itself, which only its owner saw once."""

    id: int
    user: str
    note: str
    created: float
    last_used: float | None
    expires: float | None
    #: What the token may do, as asked for when it was made (JupyterHub's raw scopes); what
    #: the owner does not hold is never granted. "inherit" is everything the owner may do.
    scopes: tuple[str, ...] = ("inherit",)
    #: The service that owns the token ([services.*]); then user is None.
    service: str | None = None
    #: The OAuth client it was issued to ('' for the hub's own: pages, CLI, API, servers').
    client: str = ""


def _token_record(row: tuple) -> TokenRecord:
    return TokenRecord(*row[:6], tuple(json.loads(row[6])), row[7], row[8])


@dataclass(frozen=True)
class UsageRecord:
    """One server session, from start to stop (kept after the user is gone from the hub)."""

    user: str
    server: str
    profile: str
    started: float
    stopped: float
    cause: str
    cpu_seconds: float | None
    peak_memory: int | None


@dataclass(frozen=True)
class ServerRecord:
    """A notebook server as last recorded: enough to adopt it after a hub restart."""

    user: str
    name: str
    unit: str
    socket: str
    state: str
    started: float | None
    last_activity: float | None
    message: str = ""
    profile: str = ""


def hash_secret(secret: str) -> str:
    """SHA-256 of a random secret: tokens are high-entropy, so no salt or KDF is needed."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    """A fresh 256-bit URL-safe secret."""
    return secrets.token_urlsafe(32)


class Store:
    """sqlite3 behind a one-thread executor."""

    def __init__(self, path: Path):
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Open (creating if needed) the database and migrate it to the current schema."""
        await self._run(self._open_sync)

    async def close(self) -> None:
        """Close the connection and the thread."""
        await self._run(self._close_sync)
        self._pool.shutdown(wait=True)

    def _open_sync(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.path.chmod(0o600)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA synchronous=NORMAL")
        _migrate(db)
        self._db = db

    def _close_sync(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _q(self, sql: str, *args) -> list[tuple]:
        assert self._db is not None, "store is not open"
        return self._db.execute(sql, args).fetchall()

    # -- users -------------------------------------------------------------------------------

    async def ensure_user(self, name: str, admin: bool) -> UserRecord:
        """Create the user row if missing and record the current admin flag."""
        return await self._run(self._ensure_user, name, admin)

    def _ensure_user(self, name: str, admin: bool) -> UserRecord:
        self._q("INSERT INTO users(name, admin, created) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET admin=excluded.admin", name, admin, time.time())
        return self._user(name)

    def _user(self, name: str) -> UserRecord | None:
        rows = self._q(f"SELECT {_USER_COLUMNS} FROM users WHERE name=?", name)
        return _user_record(rows[0]) if rows else None

    async def get_user(self, name: str) -> UserRecord | None:
        """The user's row, or None if they never logged in."""
        return await self._run(self._user, name)

    async def list_users(self) -> list[UserRecord]:
        """Every user the hub knows, by name."""
        rows = await self._run(self._q, f"SELECT {_USER_COLUMNS} FROM users ORDER BY name")
        return [_user_record(r) for r in rows]

    async def sync_admin(self, name: str, admin: bool) -> None:
        """Record whether a known user is an admin now (a write only when it changed)."""
        await self._run(self._q, "UPDATE users SET admin=? WHERE name=? AND admin!=?",
                        admin, name, admin)

    async def add_user(self, name: str, admin: bool) -> UserRecord | None:
        """Create a user row; None when the user exists already."""
        rows = await self._run(self._q, "INSERT INTO users(name, admin, created) VALUES (?, ?, ?)"
                               f" ON CONFLICT(name) DO NOTHING RETURNING {_USER_COLUMNS}",
                               name, admin, time.time())
        return _user_record(rows[0]) if rows else None

    async def remove_user(self, name: str) -> tuple[int, int]:
        """Forget a user: their sessions, tokens, server rows and user row (the OS account
        is not the store's); how many sessions and tokens there were."""
        return await self._run(self._remove_user, name)

    def _remove_user(self, name: str) -> tuple[int, int]:
        # One transaction (the connection autocommits otherwise): all of it or nothing.
        self._q("BEGIN")
        try:
            sessions = self._count("DELETE FROM sessions WHERE user=?", name)
            tokens = self._count("DELETE FROM tokens WHERE user=?", name)
            self._q("DELETE FROM servers WHERE user=?", name)
            self._q("DELETE FROM users WHERE name=?", name)
        except BaseException:
            self._q("ROLLBACK")
            raise
        self._q("COMMIT")
        return sessions, tokens

    async def touch_user(self, name: str, when: float) -> None:
        """Record activity of a user (never moving it back: reports may come late)."""
        await self._run(self._q, "UPDATE users SET last_activity=? WHERE name=? AND "
                        "(last_activity IS NULL OR last_activity<?)", when, name, when)

    # -- sessions and tokens -----------------------------------------------------------------

    async def create_session(self, user: str, max_age: float, host: str = "") -> str:
        """Start a login session (on the hub, or on one user's host); returns the cookie value
        (only its hash is stored)."""
        secret, now = new_secret(), time.time()
        await self._run(self._q, "INSERT INTO sessions(hash, user, created, expires, host) "
                        "VALUES (?, ?, ?, ?, ?)", hash_secret(secret), user, now, now + max_age,
                        host)
        return secret

    async def session_user(self, secret: str, host: str = "") -> str | None:
        """The user a live session cookie belongs to, on that host, or None."""
        rows = await self._run(self._q, "SELECT user FROM sessions WHERE hash=? AND expires>? "
                               "AND host=?", hash_secret(secret), time.time(), host)
        return rows[0][0] if rows else None

    async def session_live(self, digest: str) -> bool:
        """Whether the session with this hash is still live (not ended, not expired)."""
        rows = await self._run(self._q, "SELECT 1 FROM sessions WHERE hash=? AND expires>?",
                               digest, time.time())
        return bool(rows)

    async def delete_session(self, secret: str) -> list[str]:
        """End a session (logout), and revoke the OAuth tokens issued in it (JupyterHub's
        logout does); the hashes those tokens had."""
        return await self._run(self._delete_session, hash_secret(secret))

    def _delete_session(self, digest: str) -> list[str]:
        self._q("DELETE FROM sessions WHERE hash=?", digest)
        return [r[0] for r in self._q("DELETE FROM tokens WHERE session=? RETURNING hash",
                                      digest)]

    async def end_host_sessions_of(self, user: str) -> int:
        """End a user's sessions on users' hosts (their hub logout ends those too)."""
        return await self._run(self._count, "DELETE FROM sessions WHERE user=? AND host!=''",
                               user)

    async def purge_expired_sessions(self) -> int:
        """Forget sessions past their expiry, and the OAuth tokens past theirs (each HubOAuth
        login makes one); how many sessions there were."""
        return await self._run(self._purge_expired, time.time())

    def _purge_expired(self, now: float) -> int:
        self._count("DELETE FROM tokens WHERE client!='' AND expires<=?", now)
        return self._count("DELETE FROM sessions WHERE expires<=?", now)

    async def end_sessions_of(self, user: str) -> int:
        """End every session of a user; how many there were."""
        return await self._run(self._count, "DELETE FROM sessions WHERE user=?", user)

    def _count(self, sql: str, *args) -> int:
        assert self._db is not None, "store is not open"
        return self._db.execute(sql, args).rowcount

    async def logged_in_users(self) -> int:
        """How many users hold at least one live session."""
        rows = await self._run(self._q, "SELECT COUNT(DISTINCT user) FROM sessions "
                               "WHERE expires>?", time.time())
        return rows[0][0]

    async def users_with_credentials(self) -> list[str]:
        """Users who hold a live session or a token that has not expired."""
        now = time.time()
        rows = await self._run(self._q, "SELECT user FROM sessions WHERE expires>? UNION "
                               "SELECT user FROM tokens WHERE user IS NOT NULL AND "
                               "(expires IS NULL OR expires>?)",
                               now, now)
        return [r[0] for r in rows]

    async def create_token(self, user: str, note: str = "",
                           expires_in: float | None = None) -> str:
        """Issue an API token for user; returns it (only its hash is stored)."""
        return await self._run(self.create_token_sync, user, note, expires_in)

    def create_token_sync(self, user: str, note: str = "", expires_in: float | None = None,
                          scopes: tuple[str, ...] = ("inherit",)) -> str:
        """create_token for the CLI, which has no event loop."""
        return self._issue_token(user, note, expires_in, scopes)[0]

    async def issue_token(self, user: str, note: str = "", expires_in: float | None = None,
                          scopes: tuple[str, ...] = ("inherit",), *, client: str = "",
                          session: str = "") -> tuple[str, TokenRecord]:
        """A new API token for user: the secret (only its hash is stored) and its record;
        an OAuth token names its client and the hash of the session it was issued in."""
        return await self._run(self._issue_token, user, note, expires_in, scopes, client,
                               session)

    def _issue_token(self, user: str, note: str, expires_in: float | None,
                     scopes: tuple[str, ...] = ("inherit",), client: str = "",
                     session: str = "", secret: str | None = None) -> tuple[str, TokenRecord]:
        secret, now = secret or new_secret(), time.time()
        self._q("INSERT INTO users(name, admin, created) VALUES (?, 0, ?) "
                "ON CONFLICT(name) DO NOTHING", user, now)
        rows = self._q("INSERT INTO tokens(hash, user, note, created, expires, scopes, client, "
                       f"session) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING {_TOKEN_COLUMNS}",
                       hash_secret(secret), user, note, now,
                       now + expires_in if expires_in else None, json.dumps(list(scopes)),
                       client, session)
        return secret, _token_record(rows[0])

    async def ensure_token(self, user: str, secret: str, note: str,
                           scopes: tuple[str, ...]) -> None:
        """Keep a token whose secret the hub made itself (a server's, derived from the hub
        secret), with these scopes: added if missing, as it is otherwise."""
        await self._run(self._ensure_token, user, secret, note, scopes)

    def _ensure_token(self, user: str, secret: str, note: str,
                      scopes: tuple[str, ...]) -> None:
        if not self._q("SELECT 1 FROM tokens WHERE hash=?", hash_secret(secret)):
            self._issue_token(user, note, None, scopes, secret=secret)

    async def delete_token(self, secret: str) -> str:
        """Delete the token with this secret (a stopped server's); its hash."""
        digest = hash_secret(secret)
        await self._run(self._q, "DELETE FROM tokens WHERE hash=?", digest)
        return digest

    async def client_scopes(self, user: str, client: str) -> list[frozenset[str]]:
        """The scopes of each live token user holds from an OAuth client (whether they have
        authorized it before)."""
        rows = await self._run(self._q, "SELECT scopes FROM tokens WHERE user=? AND client=? "
                               "AND (expires IS NULL OR expires>?)", user, client, time.time())
        return [frozenset(json.loads(r[0])) for r in rows]

    async def token_user(self, secret: str) -> str | None:
        """The user an unexpired API token belongs to, or None; records its use."""
        token = await self.use_token(secret)
        return token.user if token else None

    async def use_token(self, secret: str) -> TokenRecord | None:
        """The unexpired API token with this secret, or None; records its use (last_used,
        at most every LAST_USED_EVERY seconds)."""
        return await self._run(self._use_token, hash_secret(secret))

    def _use_token(self, digest: str) -> TokenRecord | None:
        now = time.time()
        rows = self._q(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE hash=? AND "
                       "(expires IS NULL OR expires>?)", digest, now)
        if rows and self._count("UPDATE tokens SET last_used=? WHERE hash=? AND (last_used IS "
                                "NULL OR last_used<?)", now, digest, now - LAST_USED_EVERY) \
                and not rows[0][2].startswith(SERVER_TOKEN_NOTE):
            # As JupyterHub: a token's use is its owner's activity too (so a tool's owner is
            # not culled as idle while the tool runs), as coarse as last_used; but not the
            # server's own token (the culler asks each server, a singleuser server checks
            # the token with the hub: the user would never look idle).
            self._q("UPDATE users SET last_activity=? WHERE name=? AND "
                    "(last_activity IS NULL OR last_activity<?)", now, rows[0][1], now)
        return _token_record(rows[0]) if rows else None

    async def replace_service_token(self, service: str, secret: str, note: str) -> TokenRecord:
        """Make secret service's one token (its earlier ones are deleted): only its hash is
        stored."""
        return await self._run(self._replace_service_token, service, secret, note)

    def _replace_service_token(self, service: str, secret: str, note: str) -> TokenRecord:
        self._q("DELETE FROM tokens WHERE service=?", service)
        rows = self._q("INSERT INTO tokens(hash, service, note, created) VALUES (?, ?, ?, ?) "
                       f"RETURNING {_TOKEN_COLUMNS}", hash_secret(secret), service, note,
                       time.time())
        return _token_record(rows[0])

    async def service_token(self, service: str, secret: str | None = None) -> TokenRecord | None:
        """service's token (the one with this secret, when given), or None."""
        sql, args = f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE service=?", [service]
        if secret is not None:
            sql, args = sql + " AND hash=?", [service, hash_secret(secret)]
        rows = await self._run(self._q, sql + " ORDER BY id DESC LIMIT 1", *args)
        return _token_record(rows[0]) if rows else None

    async def forget_services(self, keep: list[str]) -> int:
        """Delete the tokens of every service not in keep (removed from the config); how
        many."""
        marks = ",".join("?" * len(keep))
        return await self._run(self._count, "DELETE FROM tokens WHERE service IS NOT NULL"
                               + (f" AND service NOT IN ({marks})" if keep else ""), *keep)

    async def list_tokens(self, user: str) -> list[TokenRecord]:
        """A user's tokens, oldest first (expired ones too)."""
        return await self._run(self.list_tokens_sync, user)

    def list_tokens_sync(self, user: str) -> list[TokenRecord]:
        """A user's tokens, oldest first (expired ones too, so their owner sees them end)."""
        rows = self._q(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE user=? ORDER BY id", user)
        return [_token_record(r) for r in rows]

    async def get_token(self, user: str, token_id: int) -> TokenRecord | None:
        """One of user's tokens by id; None when it is not theirs or does not exist."""
        rows = await self._run(self._q, f"SELECT {_TOKEN_COLUMNS} FROM tokens "
                               "WHERE user=? AND id=?", user, token_id)
        return _token_record(rows[0]) if rows else None

    async def revoke_token(self, user: str, token_id: int) -> str | None:
        """Delete one of user's tokens by id; the hash it had (a cache key of the token),
        or None when user has no such token."""
        rows = await self._run(self._q, "DELETE FROM tokens WHERE user=? AND id=? "
                               "RETURNING hash", user, token_id)
        return rows[0][0] if rows else None

    def revoke_token_sync(self, token_id: int) -> TokenRecord | None:
        """Delete a token by id; the token it was, or None if there is none."""
        rows = self._q(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE id=?", token_id)
        self._q("DELETE FROM tokens WHERE id=?", token_id)
        return _token_record(rows[0]) if rows else None

    # -- groups ------------------------------------------------------------------------------

    async def groups(self) -> list[GroupRecord]:
        """Every hub group, in the order they were made, with its members by name."""
        return await self._run(self._groups)

    def groups_sync(self) -> list[GroupRecord]:
        """groups() for the CLI, which has no event loop."""
        return self._groups()

    def _groups(self) -> list[GroupRecord]:
        members: dict[str, list[str]] = {}
        for grp, user in self._q("SELECT grp, user FROM group_members ORDER BY user"):
            members.setdefault(grp, []).append(user)
        return [GroupRecord(name, json.loads(props), tuple(members.get(name, ())))
                for name, props in self._q("SELECT name, properties FROM groups ORDER BY rowid")]

    async def create_group(self, name: str, users: list[str]) -> bool:
        """Make a group with these (hub) users; False when it exists already."""
        return await self._run(self._create_group, name, users)

    def _create_group(self, name: str, users: list[str]) -> bool:
        self._q("BEGIN")
        try:
            made = self._count("INSERT INTO groups(name, created) VALUES (?, ?) "
                               "ON CONFLICT(name) DO NOTHING", name, time.time())
            for user in users if made else ():
                self._q("INSERT OR IGNORE INTO group_members(grp, user) VALUES (?, ?)",
                        name, user)
        except BaseException:
            self._q("ROLLBACK")
            raise
        self._q("COMMIT")
        return bool(made)

    async def delete_group(self, name: str) -> bool:
        """Delete a group (its memberships go with it); False when there is none."""
        return bool(await self._run(self._count, "DELETE FROM groups WHERE name=?", name))

    async def set_group_members(self, name: str, users: list[str], member: bool) -> None:
        """Add (member) or remove these users."""
        sql = ("INSERT OR IGNORE INTO group_members(grp, user) VALUES (?, ?)" if member
               else "DELETE FROM group_members WHERE grp=? AND user=?")
        await self._run(self._many, sql, [(name, user) for user in users])

    def _many(self, sql: str, rows: list[tuple]) -> None:
        """One statement for many rows, in one transaction (the connection autocommits)."""
        self._q("BEGIN")
        try:
            self._db.executemany(sql, rows)
        except BaseException:
            self._q("ROLLBACK")
            raise
        self._q("COMMIT")

    async def set_group_properties(self, name: str, properties: dict) -> None:
        """Replace a group's properties (JupyterHub's PUT)."""
        await self._run(self._q, "UPDATE groups SET properties=? WHERE name=?",
                        json.dumps(properties), name)

    # -- servers -----------------------------------------------------------------------------

    async def save_server(self, rec: ServerRecord) -> None:
        """Insert or replace a server row."""
        await self._run(self._q, "INSERT OR REPLACE INTO servers(user, name, unit, socket, "
                        "state, started, last_activity, message, profile) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        rec.user, rec.name, rec.unit, rec.socket, rec.state, rec.started,
                        rec.last_activity, rec.message, rec.profile)

    async def delete_server(self, user: str, name: str) -> None:
        """Forget a (named) server."""
        await self._run(self._q, "DELETE FROM servers WHERE user=? AND name=?", user, name)

    async def record_usage(self, rec: UsageRecord) -> None:
        """Keep one ended server session."""
        await self._run(self._q, "INSERT INTO usage(user, server, profile, started, stopped, "
                        "cause, cpu_seconds, peak_memory) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        rec.user, rec.server, rec.profile, rec.started, rec.stopped, rec.cause,
                        rec.cpu_seconds, rec.peak_memory)

    async def usage(self, since: float, until: float = float("inf")) -> list[UsageRecord]:
        """Server sessions that overlap [since, until), oldest stop first."""
        return await self._run(_usage_rows, self, since, until)

    async def servers(self) -> list[ServerRecord]:
        """Every recorded server."""
        rows = await self._run(self._q, "SELECT user, name, unit, socket, state, started,"
                               " last_activity, message, profile FROM servers")
        return [ServerRecord(*r) for r in rows]


def _usage_rows(store: "Store", since: float, until: float) -> list[UsageRecord]:
    rows = store._q("SELECT user, server, profile, started, stopped, cause, cpu_seconds, "
                    "peak_memory FROM usage WHERE stopped>=? AND started<? ORDER BY stopped",
                    since, until)
    return [UsageRecord(*r) for r in rows]


def _migrate(db: sqlite3.Connection) -> None:
    """Bring the schema to SCHEMA_VERSION (user_version); refuse a newer database."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"database schema {version} is newer than this hub ({SCHEMA_VERSION})"
                           "; install the newer notebook-appliance again")
    if version < 1:
        db.executescript(_SCHEMA)
        version = 1
    # Each step and its version number in one transaction: a failed step changes nothing.
    for number, step in enumerate(_MIGRATIONS[version - 1:], start=version + 1):
        step = step.strip().rstrip(";")
        db.executescript(f"BEGIN; {step}; PRAGMA user_version={number}; COMMIT;")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def open_sync(path: Path) -> Store:
    """A Store opened without an event loop (for the CLI)."""
    store = Store(path)
    store._open_sync()
    return store
