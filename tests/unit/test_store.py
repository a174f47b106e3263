"""The sqlite store: real files in tmp_path, hashed secrets, schema versioning."""

import sqlite3
import time

import pytest

from appliance.store import _SCHEMA, SCHEMA_VERSION, ServerRecord, Store, open_sync


@pytest.fixture
async def store(tmp_path):
    s = Store(tmp_path / "state" / "hub.sqlite")
    await s.open()
    yield s
    await s.close()


async def test_sessions_are_stored_hashed_and_expire(store, tmp_path):
    await store.ensure_user("alice", False)
    secret = await store.create_session("alice", max_age=60)
    assert await store.session_user(secret) == "alice"
    assert await store.session_user(secret + "x") is None
    assert secret.encode() not in (tmp_path / "state" / "hub.sqlite").read_bytes()
    short = await store.create_session("alice", max_age=0.01)
    time.sleep(0.02)
    assert await store.session_user(short) is None
    await store.delete_session(secret)
    assert await store.session_user(secret) is None


async def test_api_tokens_are_hashed_and_record_use(store, tmp_path):
    token = await store.create_token("bob", "for a script")
    assert await store.token_user(token) == "bob"
    assert await store.token_user("nope") is None
    db = sqlite3.connect(tmp_path / "state" / "hub.sqlite")
    rows = db.execute("SELECT hash, last_used FROM tokens").fetchall()
    assert rows[0][0] != token and rows[0][1] is not None


async def test_users_and_servers_round_trip(store):
    await store.ensure_user("alice", True)
    await store.ensure_user("alice", False)  # admin flag follows the latest login
    assert (await store.get_user("alice")).admin is False
    rec = ServerRecord("alice", "", "notebook-alice.service", "/run/x.sock", "running",
                       1.0, 2.0, "")
    await store.save_server(rec)
    await store.save_server(rec)
    assert await store.servers() == [rec]
    assert [u.name for u in await store.list_users()] == ["alice"]


async def test_database_is_wal_private_and_versioned(store, tmp_path):
    path = tmp_path / "state" / "hub.sqlite"
    assert path.stat().st_mode & 0o777 == 0o600
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "hub.sqlite"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(Exception, match="newer than this hub"):
        open_sync(path)


async def test_a_version_1_database_gains_the_profile_column_and_keeps_its_rows(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA)  # what the first release created
    db.execute("INSERT INTO users(name, admin, created) VALUES ('alice', 0, 1.0)")
    db.execute("INSERT INTO servers VALUES ('alice', '', 'notebook-alice.service', '/x.sock', "
               "'running', 2.0, 3.0, '')")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    store = Store(path)
    await store.open()
    try:
        [rec] = await store.servers()
        assert (rec.user, rec.state, rec.profile) == ("alice", "running", "")
        await store.save_server(ServerRecord("alice", "lab", "u", "/s", "stopped", None, None,
                                             "", "large"))
        assert {r.name: r.profile for r in await store.servers()} == {"": "", "lab": "large"}
    finally:
        await store.close()
