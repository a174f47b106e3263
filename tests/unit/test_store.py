"""The sqlite store: real files in tmp_path, hashed secrets, schema versioning."""

import sqlite3
import time

import pytest

from appliance.store import _SCHEMA, SCHEMA_VERSION, ServerRecord, Store, hash_secret, open_sync


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


def test_a_database_this_hub_made_opens_again_with_its_tokens(tmp_path):
    # The version written is the last migration's (a stale SCHEMA_VERSION re-ran a step on
    # the second start: "duplicate column name").
    path = tmp_path / "hub.sqlite"
    first = open_sync(path)
    secret = first.create_token_sync("alice", "kept")
    first._close_sync()
    again = open_sync(path)
    assert again._use_token(hash_secret(secret)).note == "kept"
    assert again._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    again._close_sync()


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
    db.execute("INSERT INTO tokens(hash, user, note, created) VALUES ('h', 'alice', 'old', 1.0)")
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
        [old] = await store._run(store.list_tokens_sync, "alice")  # version 3: ids, expiry
        assert (old.id, old.note, old.expires) == (1, "old", None)
        assert old.scopes == ("inherit",), "a token from before scopes lost its meaning"
        assert await store.create_group("course", ["alice"])  # version 6: groups
        assert [(g.name, g.users) for g in await store.groups()] == [("course", ("alice",))]
    finally:
        await store.close()


async def test_tokens_expire_list_and_revoke_by_an_id_never_reused(store):
    forever = await store.create_token("carol", "culler")
    brief = await store.create_token("carol", "a day", expires_in=0.05)
    assert await store.token_user(brief) == "carol"
    time.sleep(0.06)
    assert await store.token_user(brief) is None and await store.token_user(forever) == "carol"
    listed = await store._run(store.list_tokens_sync, "carol")
    assert [(t.note, t.expires is None) for t in listed] == [("culler", True), ("a day", False)]
    assert listed[0].last_used is not None and listed[1].last_used is not None
    revoked = await store._run(store.revoke_token_sync, listed[1].id)
    assert revoked.note == "a day"
    again = await store.create_token("carol", "new")
    ids = [t.id for t in await store._run(store.list_tokens_sync, "carol")]
    assert ids == [listed[0].id, listed[1].id + 1], "a revoked id was given out again"
    assert await store.token_user(again) == "carol"
    assert await store._run(store.revoke_token_sync, 999) is None


async def test_sessions_of_a_user_end_together_and_expired_ones_are_purged(store):
    for name in ("dave", "erin"):
        await store.ensure_user(name, False)
    live = [await store.create_session("dave", 60) for _ in range(2)]
    await store.create_session("erin", 0.01)
    erin = await store.create_session("erin", 60)
    time.sleep(0.02)
    assert sorted(await store.users_with_credentials()) == ["dave", "erin"]
    assert await store.purge_expired_sessions() == 1
    assert await store.end_sessions_of("dave") == 2
    assert [await store.session_user(s) for s in live] == [None, None]
    assert await store.session_user(erin) == "erin"
    assert await store.users_with_credentials() == ["erin"]


async def test_a_token_is_read_and_revoked_only_through_its_owner(store):
    secret, token = await store.issue_token("carol", "script", expires_in=3600)
    assert (token.user, token.note, token.last_used) == ("carol", "script", None)
    assert token.expires - token.created == 3600
    assert await store.get_token("carol", token.id) == token
    assert await store.get_token("dave", token.id) is None
    assert await store.revoke_token("dave", token.id) is None
    assert await store.token_user(secret) == "carol"
    digest = await store.revoke_token("carol", token.id)
    assert digest == hash_secret(secret) and digest != secret
    assert await store.token_user(secret) is None
    assert await store.list_tokens("carol") == []


async def test_groups_members_properties_and_a_removed_user_leaves_them(store):
    for name in ("fay", "gus"):
        await store.ensure_user(name, False)
    assert await store.create_group("lab", ["fay"])
    assert not await store.create_group("lab", ["gus"]), "made twice"
    await store.set_group_members("lab", ["gus", "fay"], True)
    await store.set_group_properties("lab", {"course": "101", "n": [1, 2]})
    [lab] = await store.groups()
    assert (lab.users, lab.properties) == (("fay", "gus"), {"course": "101", "n": [1, 2]})
    await store.set_group_members("lab", ["fay"], False)
    await store.remove_user("gus")
    assert (await store.groups())[0].users == ()
    assert await store.delete_group("lab") and not await store.delete_group("lab")
    assert await store.groups() == []


async def test_token_scopes_are_kept_and_use_is_the_owners_activity(store):
    await store.ensure_user("hal", False)
    secret, token = await store.issue_token("hal", "culler", scopes=("list:users",
                                                                     "read:servers"))
    assert token.scopes == ("list:users", "read:servers")
    assert (await store.get_user("hal")).last_activity is None
    assert (await store.use_token(secret)).scopes == token.scopes
    assert (await store.get_user("hal")).last_activity is not None
    await store.sync_admin("hal", True)
    assert (await store.get_user("hal")).admin is True


async def test_a_servers_own_token_is_not_its_owners_activity(store):
    await store.ensure_user("ida", False)
    await store.ensure_token("ida", "server-secret", "Server at /user/ida/", ("a",))
    assert (await store.use_token("server-secret")).user == "ida"
    assert (await store.get_user("ida")).last_activity is None


async def test_expired_oauth_tokens_are_purged_with_the_sessions(store):
    await store.ensure_user("jo", False)
    gone, _ = await store.issue_token("jo", "", 0.01, ("x",), client="service-a")
    kept, _ = await store.issue_token("jo", "", 60, ("x",), client="service-a")
    await store.issue_token("jo", "script", 0.01)  # its owner's to see end: kept
    time.sleep(0.02)
    await store.purge_expired_sessions()
    assert [t.note for t in await store.list_tokens("jo")] == ["", "script"]
    assert await store.use_token(kept) is not None and await store.use_token(gone) is None


async def test_a_services_token_replaces_its_last_and_goes_with_the_service(store, tmp_path):
    user_token = await store.create_token("bob")
    first = await store.replace_service_token("cull", "s" * 32, "one")
    second = await store.replace_service_token("cull", "t" * 32, "two")
    assert second.id > first.id and second.service == "cull" and second.user is None
    assert await store.use_token("s" * 32) is None
    assert (await store.use_token("t" * 32)).service == "cull"
    assert await store.service_token("cull", "t" * 32) == await store.service_token("cull")
    assert "t" * 32 not in (tmp_path / "state" / "hub.sqlite").read_bytes().decode("latin-1")
    assert await store.users_with_credentials() == ["bob"]  # a service is no account
    assert await store.forget_services(["other"]) == 1
    assert await store.use_token("t" * 32) is None
    assert await store.token_user(user_token) == "bob"


async def test_a_version_6_database_keeps_its_tokens_and_their_ids(tmp_path):
    path = tmp_path / "v6.sqlite"
    old = open_sync(path)
    token = old.create_token_sync("alice", "kept")
    gone = old._issue_token("alice", "revoked", None)[1]
    old.revoke_token_sync(gone.id)
    db = old._db
    db.executescript("""
        CREATE TABLE t6 AS SELECT id, hash, user, note, created, last_used, expires, scopes
        FROM tokens;""")  # what version 6 held, then the table as version 6 made it
    db.executescript("DROP TABLE tokens; CREATE TABLE tokens (id INTEGER PRIMARY KEY "
                     "AUTOINCREMENT, hash TEXT NOT NULL UNIQUE, user TEXT NOT NULL REFERENCES "
                     "users(name) ON DELETE CASCADE, note TEXT NOT NULL DEFAULT '', created "
                     "REAL NOT NULL, last_used REAL, expires REAL, scopes TEXT NOT NULL "
                     "DEFAULT '[\"inherit\"]'); INSERT INTO tokens SELECT * FROM t6; "
                     "DROP TABLE t6; UPDATE sqlite_sequence SET seq="
                     f"{gone.id} WHERE name='tokens'; PRAGMA user_version=6;")
    old._close_sync()
    new = open_sync(path)
    assert new._use_token(hash_secret(token)).note == "kept"
    assert new._issue_token("alice", "next", None)[1].id == gone.id + 1  # never reused
    new._close_sync()


async def test_oauth_tokens_name_their_client_and_end_with_their_session(store):
    await store.ensure_user("ann", False)
    session = await store.create_session("ann", max_age=60)
    other = await store.create_session("ann", max_age=60)
    secret, token = await store.issue_token("ann", "", 60, ("read:users:name!user=ann",),
                                            client="service-a", session=hash_secret(session))
    kept, _ = await store.issue_token("ann", "", 60, ("x",), client="service-a",
                                      session=hash_secret(other))
    assert token.client == "service-a"
    assert await store.client_scopes("ann", "service-a") == [
        frozenset({"read:users:name!user=ann"}), frozenset({"x"})]
    assert await store.client_scopes("ann", "service-b") == []
    # Logging out revokes the tokens issued in that session (their hashes come back, for
    # the identity cache), and only those.
    assert await store.session_live(hash_secret(session))
    assert await store.delete_session(session) == [hash_secret(secret)]
    assert not await store.session_live(hash_secret(session))
    assert await store.use_token(secret) is None
    assert await store.use_token(kept) is not None


async def test_a_servers_token_is_kept_once_and_deleted_by_its_secret(store):
    await store.ensure_token("ann", "derived-secret", "Server at /user/ann/", ("a", "b"))
    await store.ensure_token("ann", "derived-secret", "Server at /user/ann/", ("a", "b"))
    tokens = await store.list_tokens("ann")
    assert [(t.note, t.scopes, t.client) for t in tokens] == [
        ("Server at /user/ann/", ("a", "b"), "")]
    assert (await store.use_token("derived-secret")).user == "ann"
    assert await store.delete_token("derived-secret") == hash_secret("derived-secret")
    assert await store.use_token("derived-secret") is None
