"""What only the MongoDB store promises: indexes, TTL, operator safety, and failure as 503."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient, monitoring

from accounts_password import PasswordService
from accounts_server import (
    AccountsServer,
    ConfigurationError,
    Email,
    EmailAlreadyExists,
    InvalidRequest,
    KeyRing,
    StoredSession,
    StoreUnavailable,
    TokenConfig,
    User,
)
from accounts_server.http import create_app
from accounts_server.stores.mongo import MongoStore

from ..helpers import PASSWORD, WireServer, load_key, wire_server_unavailable
from .test_contract import credential, session

#: Generous: a hang fails the test, a slow machine does not. Not a performance assertion.
BOUND = 20.0
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def mongo(mongodb_url: str) -> AsyncIterator[MongoStore]:
    store = MongoStore.from_url(mongodb_url, "test_mongo_specific")
    yield store
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongodb_url)
    await client.drop_database("test_mongo_specific")
    await client.close()
    await store.close()


async def test_setup_is_idempotent_and_creates_the_indexes(
    mongo: MongoStore, mongodb_url: str
) -> None:
    """Every collection shardable on a hashed `_id`: no unique index but `_id` anywhere."""
    await mongo.setup_indexes()
    await mongo.setup()
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongodb_url)
    db = client["test_mongo_specific"]
    indexes = {
        name: {ix["name"]: ix async for ix in await db[name].list_indexes()}
        for name in await db.list_collection_names()
    }
    await client.close()
    assert {"users", "claims", "sessions", "tokens", "credentials", "audit"} <= set(indexes)
    for collection, found in indexes.items():
        assert [n for n, ix in found.items() if ix.get("unique")] in ([], ["_id_"]), collection
    users = indexes["users"]
    assert dict(users["created"]["key"]) == {"created_at": 1, "_id": 1}
    assert dict(users["email"]["key"]) == {"emails.address_canonical": 1}
    assert indexes["sessions"]["ttl"]["expireAfterSeconds"] == 0
    assert indexes["tokens"]["ttl"]["expireAfterSeconds"] == 86400  # "expired", not "unknown"
    assert dict(indexes["credentials"]["user"]["key"]) == {"user_id": 1, "kind": 1}
    assert "expireAfterSeconds" not in indexes["credentials"]["user"]


def _version_1_user(user_id: str, created_at: datetime, emails: list[tuple[str, bool]]) -> Any:
    """A user document as the store wrote it under canonical email version 1: forms by
    `strip().lower()` and no version field."""
    doc: dict[str, Any] = {
        "_id": user_id,
        "username": user_id,
        "username_canonical": user_id,
        "deactivated": False,
        "extra": {},
        "services": {},
        "created_at": created_at,
        "updated_at": created_at,
    }
    if emails:
        doc["emails"] = [
            {"address": a, "address_canonical": a.strip().lower(), "verified": v} for a, v in emails
        ]
    return doc


@pytest.mark.parametrize("workers", [1, 3])
async def test_setup_recanonicalises_old_documents_and_keeps_both_of_a_collision(
    mongodb_url: str, caplog: pytest.LogCaptureFixture, workers: int
) -> None:
    """As the SQLite migration does: both addresses of a collision stay, as typed; the best
    claim (verified, then older) keeps the canonical form, whichever document setup meets first
    and however many workers run setup at once; the others are demoted and reported."""
    from accounts_server.stores.base import CANONICAL_EMAIL_VERSION

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_url)
    name = f"test_recanonicalise_{workers}"
    await client.drop_database(name)
    first = MongoStore(client[name])
    await first.setup()  # an existing deployment: its indexes are there
    before = [
        ("alice", 1, [("alice@example.com", False)]),
        ("mallory", 2, [("ＡＬＩＣＥ@example.com", False), ("m@example.com", True)]),
        ("olga", 3, [("ｏｌｇａ@example.com", False)]),  # older than the plain spelling
        ("olgb", 4, [("olga@example.com", False)]),
        ("bob", 5, [("bob@xn--bcher-kva.example", False)]),
        ("bobby", 6, [("Bob@Bücher.example", True)]),  # later, but verified
        ("carol", 7, [("Carol@XN--BCHER-KVA.example", True)]),  # merely a new form
        ("dan", 8, [("dan@example.com", False), ("ＤＡＮ@example.com", True)]),
        ("nobody", 9, []),
    ]
    await client[name]["users"].insert_many(
        [_version_1_user(u, NOW + timedelta(minutes=m), e) for u, m, e in before]
    )
    stores = [MongoStore(client[name]) for _ in range(workers)]
    with caplog.at_level(logging.WARNING, logger="accounts_server.stores"):
        await asyncio.gather(*(store.setup() for store in stores))
    store = stores[0]
    for user_id, _, emails in before:  # nothing lost, nothing respelled
        user = await store.find_user_by_id(user_id)
        assert user is not None and user.emails == tuple(Email(a, v) for a, v in emails)

    async def owner(address: str) -> str | None:
        user = await store.find_user_by_email(address)
        return None if user is None else user.id

    assert await owner("ａｌｉｃｅ@example.com") == await owner("alice@example.com") == "alice"
    assert await owner("m@example.com") == "mallory"
    assert await owner("olga@example.com") == "olga"
    assert await owner("bob@xn--bcher-kva.example") == "bobby"
    assert await owner("carol@bücher.example") == "carol"
    assert await owner("Dan@Example.com") == "dan"
    with pytest.raises(EmailAlreadyExists):
        await store.create_user(
            username="eve", emails=[Email("ALICE@EXAMPLE.COM")], extra={}, services={}, now=NOW
        )
    assert [u.id for u in await store.list_users(search="alice@example.com")] == [
        "alice",
        "mallory",
    ]
    reports = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if workers == 1:
        assert len(reports) == 4
    for loser, holder in (("mallory", "alice"), ("olgb", "olga"), ("bob", "bobby"), ("dan", "dan")):
        assert any(f"user {loser} " in r and f"user {holder}," in r for r in reports), reports
    assert not any("example" in r for r in reports)
    assert await store.set_email_verified("mallory", "alice@example.com", now=NOW)
    assert await store.remove_email("mallory", "alice@example.com", now=NOW)
    mallory = await store.find_user_by_id("mallory")
    assert mallory is not None and mallory.emails == (Email("m@example.com", True),)
    outdated = {"email_canonical_version": {"$ne": CANONICAL_EMAIL_VERSION}}
    assert await client[name]["users"].count_documents(outdated) == 0

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="accounts_server.stores"):
        await MongoStore(client[name]).setup()  # up to date: nothing to do or report
    assert caplog.records == []
    await client.drop_database(name)
    await client.close()


async def test_ttl_index_removes_expired_sessions(mongo: MongoStore) -> None:
    now = datetime.now(UTC)
    user = await mongo.create_user(username="ttl", emails=[], extra={}, services={}, now=now)
    expired = StoredSession(
        id="expired",
        user_id=user.id,
        valid=True,
        created_at=now,
        updated_at=now,
        last_used_at=now,
        expires_at=now - timedelta(seconds=1),
        refresh_hash=hashlib.sha256(b"r").digest(),
    )
    await mongo.create_session(expired)
    # The wire server sweeps every second; a real mongod's TTL monitor runs every 60 s.
    async with asyncio.timeout(120 if os.environ.get("MONGODB_URL") else BOUND):
        while await mongo.find_session("expired") is not None:
            await asyncio.sleep(0.2)


@pytest.mark.parametrize("value", [{"$ne": None}, {"$gt": ""}, {"$where": "1"}, ["a"], 1, None])
async def test_operators_never_reach_a_filter(mongo: MongoStore, value: object) -> None:
    lookups: list[Callable[[Any], Awaitable[object]]] = [
        mongo.find_user_by_id,
        mongo.find_user_by_email,
        mongo.find_user_by_username,
        mongo.find_session,
        lambda v: mongo.find_user_by_identity("oidc", v),
        lambda v: mongo.find_user_by_identity(v, "sub"),
        mongo.find_credential,
        mongo.list_user_credentials,
        mongo.delete_credential,
        lambda v: mongo.update_credential(v, version=0, data={}, now=NOW),
        lambda v: mongo.create_credential(credential(v)),
        lambda v: mongo.create_credential(credential("u", v)),
    ]
    for lookup in lookups:
        with pytest.raises(InvalidRequest):
            await lookup(value)
    if value is not None:  # no search at all; every kind
        with pytest.raises(InvalidRequest):
            await mongo.list_users(search=value)  # type: ignore[arg-type]
        with pytest.raises(InvalidRequest):
            await mongo.list_user_credentials("u", value)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", [{"$gte": 0}, "0", True, None, 0.0])
async def test_a_credential_version_is_an_integer(mongo: MongoStore, version: object) -> None:
    user = await mongo.create_user(username="ver", emails=[], extra={}, services={}, now=NOW)
    assert await mongo.create_credential(credential(user.id))
    with pytest.raises(InvalidRequest):
        await mongo.update_credential("c1", version=version, data={}, now=NOW)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        await mongo.create_credential(credential(user.id, "c2", version=version))
    found = await mongo.find_credential("c1")
    assert found is not None and found.version == 0
    assert await mongo.find_credential("c2") is None


async def test_a_user_deleted_right_after_its_lookup_keeps_no_credential(
    mongodb_url: str,
) -> None:
    """The interleaving a concurrent `delete_user` may give (the contract's gather rarely
    does): the deletion lands between `create_credential`'s user lookup and its return. Had
    the lookup come before the insert, the credential would outlive its user."""
    deleted: list[str] = []

    class DeletedMeanwhile(MongoStore):
        async def find_user_by_id(self, user_id: str) -> User | None:
            found = await super().find_user_by_id(user_id)
            if not deleted:
                deleted.append(user_id)
                assert await self.delete_user(user_id)
            return found

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_url)
    store = DeletedMeanwhile(client["test_deleted_meanwhile"])
    try:
        user = await store.create_user(username="gone", emails=[], extra={}, services={}, now=NOW)
        await store.create_credential(credential(user.id))
        assert deleted == [user.id]
        assert await store.find_credential("c1") is None
    finally:
        await client.drop_database("test_deleted_meanwhile")
        await client.close()


async def test_a_session_stored_before_amr_reads_as_no_methods(
    mongo: MongoStore, mongodb_url: str
) -> None:
    user = await mongo.create_user(username="amr", emails=[], extra={}, services={}, now=NOW)
    await mongo.create_session(session(user.id, amr=("mfa", "otp", "pwd")))
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_url)
    sessions = client["test_mongo_specific"]["sessions"]
    stored = await sessions.find_one({"_id": "s1"})
    assert stored is not None and stored["amr"] == ["mfa", "otp", "pwd"]
    await sessions.update_one({"_id": "s1"}, {"$unset": {"amr": ""}})
    await client.close()
    found = await mongo.find_session("s1")
    assert found is not None and found.amr == ()
    assert [s.amr for s in await mongo.list_user_sessions(user.id)] == [()]


async def test_server_killed_mid_run_is_503_then_recovers() -> None:
    reason = wire_server_unavailable()
    if reason:
        pytest.skip(f"fault test skipped: {reason}")
    wire = WireServer.start()
    store = MongoStore.from_url(
        wire.url, "faults", server_selection_timeout=1.0, connect_timeout=1.0, operation_timeout=2.0
    )
    server = AccountsServer(
        store=store,
        tokens=TokenConfig(keys=KeyRing([load_key("ed25519")])),
        services=[PasswordService()],
    )
    transport = httpx.ASGITransport(app=create_app(server))
    user = {"username": "f", "email": "f@example.com", "password": PASSWORD}
    login = {"user": "f", "password": PASSWORD}
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t/accounts") as api:
            assert (await api.post("/password/register", json={"user": user})).status_code == 200
            tokens = (await api.post("/password/authenticate", json=login)).json()["tokens"]
            auth = {"Authorization": f"Bearer {tokens['accessToken']}"}

            wire.stop()  # by PID, mid-run
            async with asyncio.timeout(BOUND * 5):
                for response in (
                    await api.get("/user", headers=auth),
                    await api.post("/password/authenticate", json=login),
                    await api.post("/password/register", json={"user": {**user, "username": "g"}}),
                    await api.post("/refreshTokens", json=tokens),
                    await api.post("/logout", headers=auth),
                    await api.get("/health"),
                ):
                    assert response.status_code == 503, response.text
                    assert response.json()["code"] == "StoreUnavailable"
                    assert response.headers["retry-after"].isdigit()

            wire = WireServer.start(wire.port)  # the same port, empty (in memory)
            async with asyncio.timeout(BOUND):
                while (await api.get("/health")).status_code != 200:
                    await asyncio.sleep(0.2)
            assert (await api.post("/password/register", json={"user": user})).status_code == 200
            assert (await api.post("/password/authenticate", json=login)).status_code == 200
    finally:
        wire.stop()
        await store.close()


async def test_unreachable_server_fails_within_the_selection_timeout() -> None:
    from ..helpers import free_port

    store = MongoStore.from_url(
        f"mongodb://127.0.0.1:{free_port()}/?directConnection=true", server_selection_timeout=0.5
    )
    async with asyncio.timeout(BOUND):
        with pytest.raises(StoreUnavailable):
            await store.find_user_by_id("x")
    await store.close()


@pytest.mark.parametrize("name", ["a.b", "$set", "", "x" * 33, 1])
async def test_service_names_never_become_field_paths(mongo: MongoStore, name: object) -> None:
    user = await mongo.create_user(username="svc", emails=[], extra={}, services={}, now=NOW)
    with pytest.raises(ConfigurationError):
        await mongo.get_service_data(user.id, name)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        await mongo.set_service_data(user.id, name, {}, now=NOW)  # type: ignore[arg-type]
    services: Any = {name: {}}
    with pytest.raises(ConfigurationError):
        await mongo.create_user(username="svc2", emails=[], extra={}, services=services, now=NOW)


async def test_prune_deletes_in_batches_of_the_configured_size(mongodb_url: str) -> None:
    """One `delete_many` over millions would outlast the operation timeout: each delete
    command names at most `prune_batch_size` documents."""
    from pymongo import monitoring

    from .test_contract import FAR, make_user, session

    batches: list[int] = []

    class Deletes(monitoring.CommandListener):
        def started(self, event: monitoring.CommandStartedEvent) -> None:
            if event.command_name == "delete" and event.command["delete"] == "sessions":
                ids = event.command["deletes"][0]["q"].get("_id", {}).get("$in")
                batches.append(-1 if ids is None else len(ids))

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None: ...

        def failed(self, event: monitoring.CommandFailedEvent) -> None: ...

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongodb_url, event_listeners=[Deletes()]
    )
    store = MongoStore(client["test_prune_batches"], prune_batch_size=10)
    try:
        user_id = await make_user(store)
        for i in range(25):
            await store.create_session(session(user_id, f"old{i}", expires_at=FAR))
        assert await store.prune_expired(now=FAR + timedelta(seconds=1)) == 25
        assert batches == [10, 10, 5]
    finally:
        await client.drop_database("test_prune_batches")
        await client.close()


class _Commands(monitoring.CommandListener):
    """A PyMongo command listener keeping every command the client sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent.append((event.command_name, dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None: ...

    def failed(self, event: monitoring.CommandFailedEvent) -> None: ...


@pytest.fixture
async def watched(mongodb_url: str) -> AsyncIterator[tuple[MongoStore, _Commands, Any]]:
    """A store on a handle whose URL asks for w:1 and secondary reads, as an operator's
    might, with every command it sends recorded; and the raw database beside it."""
    commands = _Commands()
    url = f"{mongodb_url}&w=1&readPreference=secondaryPreferred"
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, event_listeners=[commands])
    name = f"test_watched_{os.getpid()}"
    await client.drop_database(name)
    yield MongoStore(client[name]), commands, client[name]
    await client.drop_database(name)
    await client.close()


async def test_every_write_waits_for_a_majority_whatever_the_handle_says(
    watched: tuple[MongoStore, _Commands, Any],
) -> None:
    """w:1 lets a failover roll back an acknowledged logout; the store writes with majority
    even on a handle configured for w:1 (reads go to the primary the same way, which only a
    replica set can show)."""
    store, commands, _ = watched
    user = await store.create_user(
        username="w", emails=[Email("w@example.com")], extra={}, services={}, now=NOW
    )
    await store.create_session(session(user.id, "s1"))
    await store.invalidate_user_sessions(user.id, now=NOW)
    await store.update_user(user.id, now=NOW, username="w2")
    await store.delete_user(user.id)
    writes = [c for name, c in commands.sent if name in {"insert", "update", "delete"}]
    assert len(writes) >= 8
    assert all(c.get("writeConcern") == {"w": "majority"} for c in writes), writes


async def test_a_write_concern_can_be_chosen(mongodb_url: str) -> None:
    from pymongo import WriteConcern

    commands = _Commands()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongodb_url, event_listeners=[commands]
    )
    store = MongoStore(client["test_wc"], write_concern=WriteConcern(w=1, j=True))
    await store.create_user(username="j", emails=[], extra={}, services={}, now=NOW)
    inserts = [c for name, c in commands.sent if name == "insert"]
    assert inserts and all(c["writeConcern"] == {"w": 1, "j": True} for c in inserts)
    await client.drop_database("test_wc")
    await client.close()


async def test_setup_runs_once_for_concurrent_first_writes(
    watched: tuple[MongoStore, _Commands, Any],
) -> None:
    store, commands, _ = watched
    await asyncio.gather(
        *(
            store.create_user(username=f"c{i}", emails=[], extra={}, services={}, now=NOW)
            for i in range(10)
        )
    )
    builds = [c for name, c in commands.sent if name == "createIndexes"]
    assert len(builds) == len({(c["createIndexes"], c["indexes"][0]["name"]) for c in builds})


async def test_upgrade_from_unique_indexes_claims_every_value(
    watched: tuple[MongoStore, _Commands, Any],
) -> None:
    """A database an earlier version wrote: unique indexes on `users`, documents without
    claims. Setup drops the indexes (they keep `users` unshardable), claims every username,
    address and identity, and uniqueness holds as before."""
    from pymongo import ASCENDING

    from accounts_server import IdentityAlreadyLinked, UsernameAlreadyExists

    store, _, db = watched
    for name, key in (
        ("username_unique", "username_canonical"),
        ("email_unique", "emails.address_canonical"),
        ("identity_unique", "identities"),
    ):
        await db["users"].create_index([(key, ASCENDING)], name=name, unique=True, sparse=True)
    await db["users"].insert_one(
        {
            "_id": "old",
            "username": "Olde",
            "username_canonical": "olde",
            "emails": [
                {"address": "o@example.com", "address_canonical": "o@example.com", "verified": 1}
            ],
            "identities": ["oidc\x1fsub-1"],
            "deactivated": False,
            "extra": {},
            "services": {},
            "created_at": NOW,
            "updated_at": NOW,
            "email_canonical_version": 2,
        }
    )
    await store.setup()
    names = {index["name"] for index in await (await db["users"].list_indexes()).to_list()}
    assert not names & {"username_unique", "email_unique", "identity_unique"}
    later = NOW + timedelta(days=1)  # every claim is old: none of it may pass as an orphan's
    with pytest.raises(UsernameAlreadyExists):
        await store.create_user(username="OLDE", emails=[], extra={}, services={}, now=later)
    with pytest.raises(EmailAlreadyExists):
        await store.create_user(
            username="n", emails=[Email("O@example.com")], extra={}, services={}, now=later
        )
    with pytest.raises(IdentityAlreadyLinked):
        await store.create_user(
            username="n",
            emails=[],
            extra={},
            services={},
            now=later,
            identities=[("oidc", "sub-1")],
        )
    found = await store.find_user_by_identity("oidc", "sub-1")
    assert found is not None and found.id == "old"
    assert await store.create_user(username="n", emails=[], extra={}, services={}, now=later)


async def test_an_orphaned_claim_is_taken_over_once_it_is_old(
    watched: tuple[MongoStore, _Commands, Any],
) -> None:
    """A write cut short between claim and user document (a crash, a timeout) leaves a claim
    nobody holds. While it is young it may be a write under way and is respected; once older
    than any write may take, the next claimant takes it."""
    from accounts_server import UsernameAlreadyExists

    store, _, db = watched
    await store.setup()
    await db["claims"].insert_many(
        [
            {"_id": "username:young", "user_id": "ghost", "at": NOW - timedelta(seconds=10)},
            {"_id": "username:old", "user_id": "ghost", "at": NOW - timedelta(minutes=2)},
            {"_id": "email:old@example.com", "user_id": "ghost", "at": NOW - timedelta(days=9)},
        ]
    )
    with pytest.raises(UsernameAlreadyExists):
        await store.create_user(username="young", emails=[], extra={}, services={}, now=NOW)
    user = await store.create_user(
        username="old", emails=[Email("old@example.com")], extra={}, services={}, now=NOW
    )
    assert (await db["claims"].find_one({"_id": "username:old"}))["user_id"] == user.id
    # ...and a refused create leaves none of its own claims behind.
    with pytest.raises(UsernameAlreadyExists):
        await store.create_user(
            username="young", emails=[Email("fresh@example.com")], extra={}, services={}, now=NOW
        )
    assert await db["claims"].find_one({"_id": "email:fresh@example.com"}) is None
    assert await store.create_user(
        username="fresh", emails=[Email("fresh@example.com")], extra={}, services={}, now=NOW
    )


async def test_renames_and_removals_release_their_claims(
    watched: tuple[MongoStore, _Commands, Any],
) -> None:
    store, _, db = watched
    first = await store.create_user(
        username="ann", emails=[Email("ann@example.com")], extra={}, services={}, now=NOW
    )
    await store.update_user(first.id, now=NOW, username="anne")
    assert await store.remove_email(first.id, "ann@example.com", now=NOW)
    second = await store.create_user(
        username="ann", emails=[Email("ann@example.com")], extra={}, services={}, now=NOW
    )
    assert second.id != first.id
    await store.delete_user(first.id)
    assert await db["claims"].count_documents({"user_id": first.id}) == 0
    assert await store.create_user(username="anne", emails=[], extra={}, services={}, now=NOW)


async def test_a_database_dropped_under_a_running_store_keeps_uniqueness(
    watched: tuple[MongoStore, _Commands, Any],
) -> None:
    """Indexes are ensured once per process; uniqueness does not depend on them (the claims'
    `_id` is unique in any collection), and the next prune creates the indexes again."""
    from accounts_server import UsernameAlreadyExists

    store, _, db = watched
    await store.create_user(username="d", emails=[], extra={}, services={}, now=NOW)
    await db.client.drop_database(db.name)
    await store.create_user(username="d", emails=[], extra={}, services={}, now=NOW)
    with pytest.raises(UsernameAlreadyExists):
        await store.create_user(username="D", emails=[], extra={}, services={}, now=NOW)
    assert "ttl" not in await db["sessions"].index_information()
    await store.prune_expired(now=NOW)
    assert "ttl" in await db["sessions"].index_information()


async def test_a_frozen_server_answers_503_within_one_deadline_per_request() -> None:
    """A stopped (not dead) mongod: every operation waits its whole timeout, and a request
    makes several. The request's store calls share one deadline instead."""
    import signal

    reason = wire_server_unavailable()
    if reason:
        pytest.skip(f"fault test skipped: {reason}")
    wire = WireServer.start()
    store = MongoStore.from_url(wire.url, "frozen", operation_timeout=10.0)
    server = AccountsServer(
        store=store,
        tokens=TokenConfig(keys=KeyRing([load_key("ed25519")])),
        services=[PasswordService()],
    )
    app = create_app(server, store_deadline=0.5)
    user = {"username": "f", "email": "f@example.com", "password": PASSWORD}
    login = {"user": "f", "password": PASSWORD}
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t/accounts") as api:
            assert (await api.post("/password/register", json={"user": user})).status_code == 200
            tokens = (await api.post("/password/authenticate", json=login)).json()["tokens"]
            auth = {"Authorization": f"Bearer {tokens['accessToken']}"}
            os.kill(wire.pid, signal.SIGSTOP)
            try:
                calls: list[Callable[[], Awaitable[httpx.Response]]] = [
                    lambda: api.get("/user", headers=auth),
                    lambda: api.post("/password/authenticate", json=login),
                ]
                for call in calls:
                    # Half a second of store time, then the answer: well inside one 10 s
                    # operation, let alone several.
                    async with asyncio.timeout(5.0):
                        response = await call()
                    assert response.status_code == 503, response.text
                    assert response.json()["code"] == "StoreUnavailable"
            finally:
                os.kill(wire.pid, signal.SIGCONT)
    finally:
        wire.stop()
        await store.close()


async def test_the_handles_codec_options_stay(mongodb_url: str) -> None:
    """Only the read preference, write concern and time zone are the store's: a UUID
    representation the application chose still decodes its own fields."""
    import uuid

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongodb_url, uuidRepresentation="standard"
    )
    store = MongoStore(client["test_codec"])
    user = await store.create_user(username="u", emails=[], extra={}, services={}, now=NOW)
    token = uuid.uuid4()
    await client["test_codec"]["users"].update_one({"_id": user.id}, {"$set": {"extra.t": token}})
    found = await store.find_user_by_id(user.id)
    assert found is not None and found.extra == {"t": token}
    assert found.created_at is not None and found.created_at.tzinfo is not None
    await client.drop_database("test_codec")
    await client.close()
