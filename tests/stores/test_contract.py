"""The store contract. Every store runs this file unchanged (the `store` fixture's params)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from accounts_server import (
    Email,
    EmailAlreadyExists,
    IdentityAlreadyLinked,
    Store,
    StoredSession,
    UserAlreadyExists,
    UsernameAlreadyExists,
)
from accounts_server.errors import CredentialAlreadyExists
from accounts_server.stores.base import AuditQuery, AuditRecord, Credential, OneTimeToken

#: Current (a TTL index really deletes sessions that expired), to the millisecond: what a
#: store keeps (BSON's precision) and what the round trips below compare.
NOW = datetime.now(UTC).replace(microsecond=123000)
#: For records that must outlive the run: a TTL index deletes anything already expired, and
#: NOW is fixed at import, minutes before some tests run.
FAR = NOW + timedelta(days=1)


def h(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


async def make_user(store: Store, username: str | None = "alice", *emails: str) -> str:
    user = await store.create_user(
        username=username,
        emails=[Email(e) for e in emails],
        extra={"plan": "pro"},
        services={"password": {"argon2": "$argon2id$fake"}},
        now=NOW,
    )
    return user.id


def session(user_id: str, sid: str = "s1", **changes: object) -> StoredSession:
    fields: dict[str, object] = {
        "id": sid,
        "user_id": user_id,
        "valid": True,
        "created_at": NOW,
        "updated_at": NOW,
        "last_used_at": NOW,
        "expires_at": NOW + timedelta(days=1),
        "refresh_hash": h("r0"),
        "ip": "203.0.113.7",
        "user_agent": "test",
    }
    fields.update(changes)
    return StoredSession(**fields)  # type: ignore[arg-type]


class TestUsers:
    async def test_what_a_write_returns_is_what_a_read_returns(self, store: Store) -> None:
        """To the microsecond, which MongoDB does not keep: a store returns what it kept."""
        precise = NOW.replace(microsecond=123456)
        created = await store.create_user(
            username="precise", emails=[], extra={}, services={}, now=precise
        )
        assert created == await store.find_user_by_id(created.id)
        updated = await store.update_user(created.id, now=precise + timedelta(microseconds=7))
        assert updated is not None and updated == await store.find_user_by_id(created.id)
        assert abs(updated.updated_at - precise) < timedelta(milliseconds=1)  # type: ignore[operator]

    async def test_unique_values_that_name_other_kinds_are_told_apart(self, store: Store) -> None:
        """A duplicate's error names the kind of value, whatever the value spells."""
        await store.create_user(
            username="emails-identities",
            emails=[Email("identities@username.example")],
            extra={},
            services={},
            now=NOW,
            identities=[("emails", "username")],
        )
        for kwargs, error in (
            ({"username": "EMAILS-identities"}, UsernameAlreadyExists),
            ({"emails": [Email("identities@username.example")]}, EmailAlreadyExists),
            ({"identities": [("emails", "username")]}, IdentityAlreadyLinked),
        ):
            values: dict[str, Any] = {"username": None, "emails": [], **kwargs}
            with pytest.raises(error):
                await store.create_user(extra={}, services={}, now=NOW, **values)

    async def test_an_import_keeps_its_id_and_creation_and_runs_once(self, store: Store) -> None:
        then = NOW - timedelta(days=400)
        kept = await store.create_user(
            username="imported",
            emails=[Email("imp@example.com", verified=True)],
            extra={},
            services={},
            now=NOW,
            user_id="5f0c8a9e2b1d4c3a9e8f7a6b",
            created_at=then,
        )
        assert (kept.id, kept.created_at, kept.updated_at) == (
            "5f0c8a9e2b1d4c3a9e8f7a6b",
            then,
            NOW,
        )
        assert kept == await store.find_user_by_id(kept.id)
        with pytest.raises(UserAlreadyExists):  # the same import again
            await store.create_user(
                username="imported",
                emails=[Email("imp@example.com"), Email("new@example.com")],
                extra={},
                services={},
                now=NOW,
                user_id=kept.id,
            )
        # The user it found keeps what it has, and nothing of the refused one was kept.
        assert await store.find_user_by_username("IMPORTED") == kept
        assert await store.find_user_by_email("imp@example.com") == kept
        assert await store.find_user_by_email("new@example.com") is None
        with pytest.raises(UsernameAlreadyExists):
            await store.create_user(username="imported", emails=[], extra={}, services={}, now=NOW)
        assert await store.create_user(
            username="other", emails=[Email("new@example.com")], extra={}, services={}, now=NOW
        )

    async def test_a_user_cannot_repeat_a_unique_value(self, store: Store) -> None:
        with pytest.raises(IdentityAlreadyLinked):
            await store.create_user(
                username="twice",
                emails=[],
                extra={},
                services={},
                now=NOW,
                identities=[("oidc", "a"), ("oidc", "a")],
            )
        with pytest.raises(EmailAlreadyExists):
            await store.create_user(
                username="twice",
                emails=[Email("t@example.com"), Email("T@EXAMPLE.com")],
                extra={},
                services={},
                now=NOW,
            )
        assert await store.create_user(username="twice", emails=[], extra={}, services={}, now=NOW)

    async def test_created_user_is_found_by_id_username_and_email(self, store: Store) -> None:
        user_id = await make_user(store, "Alice", "Alice@Example.com")
        by_id = await store.find_user_by_id(user_id)
        assert by_id is not None
        assert by_id.username == "Alice"
        assert by_id.emails == (Email("Alice@Example.com", verified=False),)
        assert by_id.extra == {"plan": "pro"}
        assert by_id.created_at == NOW
        assert not by_id.deactivated
        assert await store.find_user_by_username("alice") == by_id
        assert await store.find_user_by_username("ＡＬＩＣＥ") == by_id  # NFKC + casefold
        assert await store.find_user_by_email(" alice@EXAMPLE.com ") == by_id

    async def test_unknown_lookups_are_none(self, store: Store) -> None:
        assert await store.find_user_by_id("nope") is None
        assert await store.find_user_by_username("nope") is None
        assert await store.find_user_by_email("nope@example.com") is None
        assert await store.get_service_data("nope", "password") is None

    async def test_canonical_username_is_unique(self, store: Store) -> None:
        await make_user(store, "Bob")
        with pytest.raises(UsernameAlreadyExists):
            await make_user(store, "bOB")

    async def test_canonical_email_is_unique_and_failed_create_leaves_nothing(
        self, store: Store
    ) -> None:
        await make_user(store, "carol", "carol@example.com")
        with pytest.raises(EmailAlreadyExists):
            await make_user(store, "carol2", "CAROL@example.com")
        assert await store.find_user_by_username("carol2") is None

    @pytest.mark.parametrize("value", ["emails", "email_unique", "identities", "identity_unique"])
    async def test_a_conflict_is_told_by_its_constraint_not_by_the_value(
        self, store: Store, value: str
    ) -> None:
        """The duplicated value is user input and may spell a field or index name."""
        await store.create_user(
            username=value,
            emails=[Email(f"{value}@example.com")],
            extra={},
            services={},
            now=NOW,
            identities=[(value, value)],
        )
        with pytest.raises(UsernameAlreadyExists):
            await make_user(store, value.upper())
        with pytest.raises(EmailAlreadyExists):
            await make_user(store, f"{value}2", f"{value}@example.com")
        with pytest.raises(IdentityAlreadyLinked):
            await store.create_user(
                username=f"{value}3",
                emails=[],
                extra={},
                services={},
                now=NOW,
                identities=[(value, value)],
            )

    async def test_users_without_username_do_not_collide(self, store: Store) -> None:
        first = await make_user(store, None, "a@example.com")
        second = await make_user(store, None, "b@example.com")
        assert first != second
        for user_id, address in ((first, "a@example.com"), (second, "b@example.com")):
            found = await store.find_user_by_email(address)
            assert found is not None and found.id == user_id and found.username is None
            assert await store.find_user_by_id(user_id) == found

    async def test_concurrent_creates_of_one_email_have_one_winner(self, store: Store) -> None:
        results = await asyncio.gather(
            *(make_user(store, f"u{i}", "same@example.com") for i in range(20)),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, str)]
        assert len(winners) == 1
        assert all(isinstance(r, EmailAlreadyExists) for r in results if r not in winners)

    async def test_service_data_round_trip(self, store: Store) -> None:
        user_id = await make_user(store)
        assert await store.get_service_data(user_id, "password") == {"argon2": "$argon2id$fake"}
        assert await store.get_service_data(user_id, "oauth") is None
        later = NOW + timedelta(hours=1)
        assert await store.set_service_data(user_id, "password", {"argon2": "new"}, now=later)
        assert await store.get_service_data(user_id, "password") == {"argon2": "new"}
        assert await store.set_service_data(user_id, "oauth", {"sub": "x"}, now=later)
        assert await store.get_service_data(user_id, "oauth") == {"sub": "x"}
        assert not await store.set_service_data("nope", "oauth", {}, now=later)

    async def test_deactivate_and_activate(self, store: Store) -> None:
        user_id = await make_user(store)
        assert await store.set_user_deactivated(user_id, True, now=NOW)
        user = await store.find_user_by_id(user_id)
        assert user is not None and user.deactivated
        assert await store.set_user_deactivated(user_id, False, now=NOW)
        user = await store.find_user_by_id(user_id)
        assert user is not None and not user.deactivated
        assert not await store.set_user_deactivated("nope", True, now=NOW)

    async def test_delete_removes_emails_service_data_and_sessions(self, store: Store) -> None:
        user_id = await make_user(store, "dave", "dave@example.com")
        await store.create_session(session(user_id))
        assert await store.delete_user(user_id)
        assert await store.find_user_by_id(user_id) is None
        assert await store.find_user_by_email("dave@example.com") is None
        assert await store.get_service_data(user_id, "password") is None
        assert await store.find_session("s1") is None
        assert not await store.delete_user(user_id)
        await make_user(store, "dave", "dave@example.com")  # identifiers are free again


class TestSessions:
    async def test_round_trip(self, store: Store) -> None:
        """Every field, the optional ones set too, comes back as it went in."""
        user_id = await make_user(store)
        stored = session(
            user_id,
            updated_at=NOW + timedelta(seconds=1),
            last_used_at=NOW + timedelta(seconds=2),
            impersonator_id="admin",
            previous_hash=h("p"),
            rotated_at=NOW + timedelta(seconds=3),
            amr=("pwd", "otp", "mfa"),  # in no sorted order: the order given is kept
        )
        await store.create_session(stored)
        assert await store.find_session("s1") == stored
        assert await store.find_session("nope") is None
        bare = session(user_id, "s2", ip=None, user_agent=None)
        await store.create_session(bare)
        found = await store.find_session("s2")
        assert found == bare
        assert found is not None and found.amr == ()
        listed = {s.id: s for s in await store.list_user_sessions(user_id)}
        assert listed == {"s1": stored, "s2": bare}

    async def test_rotate_is_compare_and_set(self, store: Store) -> None:
        """And records who rotated: the reuse grace is that client's alone."""
        user_id = await make_user(store)
        await store.create_session(session(user_id))
        later = NOW + timedelta(minutes=5)
        client = ("198.51.100.7", "phone")
        assert not await store.rotate_refresh(
            "s1",
            expected_hash=h("wrong"),
            new_hash=h("r1"),
            now=later,
            ip=client[0],
            user_agent=client[1],
        )
        assert await store.rotate_refresh(
            "s1",
            expected_hash=h("r0"),
            new_hash=h("r1"),
            now=later,
            ip=client[0],
            user_agent=client[1],
        )
        assert not await store.rotate_refresh(
            "s1", expected_hash=h("r0"), new_hash=h("r2"), now=later, ip=None, user_agent=None
        )
        found = await store.find_session("s1")
        assert found is not None
        assert (found.refresh_hash, found.previous_hash) == (h("r1"), h("r0"))
        assert found.rotated_at == later and found.last_used_at == later
        assert (found.ip, found.user_agent) == client

    async def test_concurrent_rotations_have_one_winner(self, store: Store) -> None:
        user_id = await make_user(store)
        await store.create_session(session(user_id))
        wins = await asyncio.gather(
            *(
                store.rotate_refresh(
                    "s1",
                    expected_hash=h("r0"),
                    new_hash=h(f"n{i}"),
                    now=NOW,
                    ip=None,
                    user_agent=None,
                )
                for i in range(20)
            )
        )
        assert wins.count(True) == 1

    async def test_invalid_session_does_not_rotate(self, store: Store) -> None:
        user_id = await make_user(store)
        await store.create_session(session(user_id))
        assert await store.invalidate_session("s1", now=NOW)
        assert not await store.invalidate_session("s1", now=NOW)
        assert not await store.rotate_refresh(
            "s1", expected_hash=h("r0"), new_hash=h("r1"), now=NOW, ip=None, user_agent=None
        )
        found = await store.find_session("s1")
        assert found is not None and not found.valid

    async def test_invalidate_user_sessions_keeps_exceptions_and_other_users(
        self, store: Store
    ) -> None:
        alice = await make_user(store, "alice")
        bob = await make_user(store, "bob")
        for sid in ("a1", "a2", "a3"):
            await store.create_session(session(alice, sid))
        await store.create_session(session(bob, "b1"))
        assert await store.invalidate_user_sessions(alice, now=NOW, except_ids=["a2"]) == 2
        valid = {sid: (await store.find_session(sid)).valid for sid in ("a1", "a2", "a3", "b1")}  # type: ignore[union-attr]
        assert valid == {"a1": False, "a2": True, "a3": False, "b1": True}

    async def test_prune_deletes_only_expired(self, store: Store) -> None:
        user_id = await make_user(store)
        # Expiries in the future of the real clock, so a TTL sweeper (MongoDB's) cannot delete
        # the record before prune does: prune is judged at a `now` after the first expiry.
        soon, later = FAR, FAR + timedelta(days=1)
        await store.create_session(session(user_id, "old", expires_at=soon))
        await store.create_session(session(user_id, "new", expires_at=later))
        assert await store.prune_expired(now=soon + timedelta(seconds=1)) == 1
        assert await store.find_session("old") is None
        assert await store.find_session("new") is not None


class TestEmails:
    async def test_add_verify_remove(self, store: Store) -> None:
        user_id = await make_user(store, "erin", "erin@example.com")
        assert await store.add_email(user_id, Email("Erin@Work.example"), now=NOW)
        assert await store.set_email_verified(user_id, "erin@work.EXAMPLE", now=NOW)
        assert await store.set_email_verified(user_id, "erin@work.example", now=NOW)  # idempotent
        user = await store.find_user_by_email("erin@work.example")
        assert user is not None and user.id == user_id
        assert user.emails == (Email("erin@example.com"), Email("Erin@Work.example", True))
        assert await store.remove_email(user_id, "ERIN@example.com", now=NOW)
        assert not await store.remove_email(user_id, "erin@example.com", now=NOW)
        assert await store.find_user_by_email("erin@example.com") is None
        assert not await store.set_email_verified(user_id, "erin@example.com", now=NOW)

    async def test_added_email_is_unique_across_users(self, store: Store) -> None:
        first = await make_user(store, "f1", "shared@example.com")
        second = await make_user(store, "f2")
        with pytest.raises(EmailAlreadyExists):
            await store.add_email(second, Email("SHARED@example.com"), now=NOW)
        with pytest.raises(EmailAlreadyExists):
            await store.add_email(first, Email("shared@example.com"), now=NOW)
        assert not await store.add_email("nope", Email("x@example.com"), now=NOW)
        assert not await store.add_email("nope", Email("shared@example.com"), now=NOW)

    async def test_removing_the_last_email_frees_it_and_keeps_uniqueness_working(
        self, store: Store
    ) -> None:
        a = await make_user(store, "g1", "g1@example.com")
        b = await make_user(store, "g2", "g2@example.com")
        assert await store.remove_email(a, "g1@example.com", now=NOW)
        assert await store.remove_email(b, "g2@example.com", now=NOW)
        user = await store.find_user_by_id(a)
        assert user is not None and user.emails == ()
        assert await store.add_email(b, Email("g1@example.com"), now=NOW)


class TestLookAlikeEmails:
    """Spellings of one mailbox are one address (`canonical_email`): each conflicts with the
    first, finds the same user, and the address stays as it was first given."""

    @pytest.mark.parametrize(
        ("first", "other"),
        [
            ("alice@example.com", "ａｌｉｃｅ@example.com"),  # fullwidth local part
            ("alice@example.com", "ＡＬＩＣＥ＠ＥＸＡＭＰＬＥ．ＣＯＭ"),  # fullwidth, @ and . too
            ("sam@example.com", "ſam@example.com"),  # long s: casefold, not lower()
            ("straße@example.com", "STRASSE@example.com"),  # full case folding: ß is ss
            ("alice@bücher.example", "alice@xn--bcher-kva.example"),  # U-label, A-label
            ("alice@xn--bcher-kva.example", "ALICE@BÜCHER.EXAMPLE"),
            ("alice@bücher.example", "alice@bu\u0308cher.example"),  # decomposed ü
        ],
    )
    async def test_spellings_of_one_address_are_one(
        self, store: Store, first: str, other: str
    ) -> None:
        user_id = await make_user(store, "first", first)
        with pytest.raises(EmailAlreadyExists):
            await make_user(store, "second", other)
        assert await store.find_user_by_username("second") is None
        found = await store.find_user_by_email(other)
        assert found is not None and found.id == user_id
        assert found.emails == (Email(first),)  # as first given
        someone = await make_user(store, "someone")
        with pytest.raises(EmailAlreadyExists):
            await store.add_email(someone, Email(other), now=NOW)
        with pytest.raises(EmailAlreadyExists):
            await store.add_email(user_id, Email(other), now=NOW)
        with pytest.raises(EmailAlreadyExists):  # two spellings in one new user
            await make_user(store, "both", f"x{first}", f"x{other}")
        assert [u.id for u in await store.list_users(search=other)] == [user_id]
        assert await store.set_email_verified(user_id, other, now=NOW)
        user = await store.find_user_by_id(user_id)
        assert user is not None and user.emails == (Email(first, verified=True),)
        assert await store.remove_email(user_id, other, now=NOW)
        assert await store.find_user_by_email(first) is None

    async def test_sharp_s_is_ss_in_the_local_part_not_in_the_domain(self, store: Store) -> None:
        """Case folding for the local part, as for usernames; UTS #46 for the domain, where
        `straße.example` (`xn--strae-oqa`) and `strasse.example` are two domains in DNS."""
        local = await make_user(store, "local", "straße@example.com")
        for spelling in ("STRASSE@example.com", "strasse@example.com", "STRAẞE@example.com"):
            with pytest.raises(EmailAlreadyExists):
                await make_user(store, "other", spelling)
            assert (await store.find_user_by_email(spelling)).id == local  # type: ignore[union-attr]
        sharp = await make_user(store, "sharp", "a@straße.example")
        for spelling in ("a@xn--strae-oqa.example", "A@STRAẞE.EXAMPLE", "a@STRAßE.example"):
            with pytest.raises(EmailAlreadyExists):
                await make_user(store, "other", spelling)
            assert (await store.find_user_by_email(spelling)).id == sharp  # type: ignore[union-attr]
        double = await make_user(store, "double", "a@strasse.example")
        assert (await store.find_user_by_email("A@STRASSE.EXAMPLE")).id == double  # type: ignore[union-attr]
        assert (await store.find_user_by_email("a@straße.example")).id == sharp  # type: ignore[union-attr]

    async def test_letters_of_other_scripts_stay_other_addresses(self, store: Store) -> None:
        latin = await make_user(store, "latin", "alice@xn--bcher-kva.example")
        cyrillic = await make_user(store, "cyrillic", "\u0430lice@bücher.example")
        assert (await store.find_user_by_email("ALICE@BÜCHER.EXAMPLE")).id == latin  # type: ignore[union-attr]
        assert (await store.find_user_by_email("\u0410LICE@bücher.example")).id == cyrillic  # type: ignore[union-attr]

    async def test_search_by_a_prefix_canonicalises_it_the_same_way(self, store: Store) -> None:
        user_id = await make_user(store, "bea", "Bea@xn--bcher-kva.example")
        for prefix in ("ＢＥＡ@", "bea@BÜ", "bea@bu\u0308cher.", "bea@xn--bcher-kva.example"):
            assert [u.id for u in await store.list_users(search=prefix)] == [user_id], prefix


class TestOneTimeTokens:
    def token(self, user_id: str, raw: str = "t", kind: str = "reset") -> OneTimeToken:
        return OneTimeToken(
            token_hash=h(raw),
            kind=kind,
            user_id=user_id,
            email="t@example.com",
            created_at=NOW,
            expires_at=FAR,
        )

    async def test_consume_once_and_only_with_its_kind(self, store: Store) -> None:
        user_id = await make_user(store)
        await store.create_token(self.token(user_id))
        assert await store.consume_token(h("t"), "verify") is None
        assert await store.consume_token(h("t"), "reset") == self.token(user_id)
        assert await store.consume_token(h("t"), "reset") is None

    async def test_concurrent_consumers_one_winner(self, store: Store) -> None:
        user_id = await make_user(store)
        await store.create_token(self.token(user_id))
        results = await asyncio.gather(*(store.consume_token(h("t"), "reset") for _ in range(20)))
        assert sum(r is not None for r in results) == 1

    async def test_delete_user_tokens_by_kind(self, store: Store) -> None:
        user_id = await make_user(store)
        await store.create_token(self.token(user_id, "a", "reset"))
        await store.create_token(self.token(user_id, "b", "reset"))
        await store.create_token(self.token(user_id, "c", "verify"))
        assert await store.delete_user_tokens(user_id, ["reset", "enroll"]) == 2
        assert await store.consume_token(h("a"), "reset") is None
        assert await store.consume_token(h("b"), "reset") is None
        assert await store.consume_token(h("c"), "verify") is not None

    async def test_tokens_go_with_their_user(self, store: Store) -> None:
        user_id = await make_user(store)
        await store.create_token(self.token(user_id))
        await store.delete_user(user_id)
        assert await store.consume_token(h("t"), "reset") is None


class TestCounters:
    async def test_hits_count_per_key_and_window(self, store: Store) -> None:
        later = NOW + timedelta(minutes=1)
        for expected in (1, 2, 3):
            assert await store.hit_counter("ip:1", window_start=NOW, expires_at=FAR) == expected
        assert await store.hit_counter("ip:2", window_start=NOW, expires_at=FAR) == 1
        assert await store.hit_counter("ip:1", window_start=later, expires_at=FAR) == 1
        assert await store.get_counter("ip:1", window_start=NOW) == 3
        assert await store.get_counter("ip:3", window_start=NOW) == 0
        await store.clear_counter("ip:1")
        assert await store.get_counter("ip:1", window_start=NOW) == 0
        assert await store.get_counter("ip:2", window_start=NOW) == 1

    async def test_concurrent_hits_are_all_counted(self, store: Store) -> None:
        counts = await asyncio.gather(
            *(store.hit_counter("k", window_start=NOW, expires_at=FAR) for _ in range(30))
        )
        assert sorted(counts) == list(range(1, 31))

    async def test_prune_expired_covers_tokens_and_counters(self, store: Store) -> None:
        user_id = await make_user(store)
        # As above: expired for prune's `now`, not yet for a TTL sweeper's real clock.
        await store.create_token(OneTimeToken(h("old"), "reset", user_id, NOW, FAR))
        await store.hit_counter("old", window_start=NOW, expires_at=FAR)
        assert await store.prune_expired(now=FAR + timedelta(seconds=1)) == 2
        assert await store.consume_token(h("old"), "reset") is None
        assert await store.get_counter("old", window_start=NOW) == 0


@pytest.mark.parametrize("store_options", [{"prune_batch_size": 100}])
async def test_prune_in_batches_deletes_exactly_the_expired_and_lets_others_run(
    store: Store,
) -> None:
    """Issue 14: a prune of millions must not hold the server. Batches of 100 here: 250
    expired sessions (two full batches and part of one), 100 expired tokens (a full batch,
    then an empty one), 3 expired counters, beside live records of each kind."""
    user_id = await make_user(store)
    later = FAR + timedelta(days=1)  # expiries as above: no TTL sweeper races the prune
    for i in range(250):
        await store.create_session(session(user_id, f"old{i}", expires_at=FAR))
    for i in range(5):
        await store.create_session(session(user_id, f"new{i}", expires_at=later))
    for i in range(100):
        await store.create_token(OneTimeToken(h(f"old{i}"), "reset", user_id, NOW, FAR))
    await store.create_token(OneTimeToken(h("new"), "reset", user_id, NOW, later))
    for key in ("a", "b", "c"):
        await store.hit_counter(key, window_start=NOW, expires_at=FAR)
    await store.hit_counter("live", window_start=NOW, expires_at=later)

    ran = 0
    pruning = asyncio.create_task(store.prune_expired(now=FAR + timedelta(seconds=1)))
    while not pruning.done():
        ran += 1
        await asyncio.sleep(0)
    assert await pruning == 250 + 100 + 3
    assert ran > 1  # this loop ran while the prune was in progress, not only before it began
    remaining = sorted(s.id for s in await store.list_user_sessions(user_id))
    assert remaining == [f"new{i}" for i in range(5)]
    assert await store.consume_token(h("old0"), "reset") is None
    assert await store.consume_token(h("new"), "reset") is not None
    assert await store.get_counter("a", window_start=NOW) == 0
    assert await store.get_counter("live", window_start=NOW) == 1


class TestIdentities:
    async def test_created_with_the_user_and_found(self, store: Store) -> None:
        user = await store.create_user(
            username="oli",
            emails=[],
            extra={},
            services={},
            now=NOW,
            identities=[("google", "sub-1")],
        )
        assert await store.find_user_by_identity("google", "sub-1") == user
        assert await store.find_user_by_identity("google", "sub-2") is None
        assert await store.find_user_by_identity("github", "sub-1") is None

    async def test_unique_per_provider_and_subject_and_failed_create_leaves_nothing(
        self, store: Store
    ) -> None:
        await store.create_user(
            username="p1", emails=[], extra={}, services={}, now=NOW, identities=[("g", "s")]
        )
        with pytest.raises(IdentityAlreadyLinked):
            await store.create_user(
                username="p2", emails=[], extra={}, services={}, now=NOW, identities=[("g", "s")]
            )
        assert await store.find_user_by_username("p2") is None

    async def test_link_to_an_existing_user(self, store: Store) -> None:
        first = await make_user(store, "q1")
        second = await make_user(store, "q2")
        assert await store.add_identity(first, "oidc", "abc", now=NOW)
        found = await store.find_user_by_identity("oidc", "abc")
        assert found is not None and found.id == first
        with pytest.raises(IdentityAlreadyLinked):
            await store.add_identity(second, "oidc", "abc", now=NOW)
        with pytest.raises(IdentityAlreadyLinked):
            await store.add_identity(first, "oidc", "abc", now=NOW)
        assert not await store.add_identity("nope", "oidc", "xyz", now=NOW)
        assert not await store.add_identity("nope", "oidc", "abc", now=NOW)
        assert await store.add_identity(first, "github", "7", now=NOW)
        assert await store.list_user_identities(first) == [("github", "7"), ("oidc", "abc")]
        assert await store.list_user_identities(second) == []
        assert await store.list_user_identities("nope") == []
        await store.delete_user(first)
        assert await store.find_user_by_identity("oidc", "abc") is None
        assert await store.add_identity(second, "oidc", "abc", now=NOW)

    async def test_concurrent_links_of_one_identity_have_one_winner(self, store: Store) -> None:
        users = [await make_user(store, f"r{i}") for i in range(10)]
        results = await asyncio.gather(
            *(store.add_identity(u, "oidc", "same", now=NOW) for u in users), return_exceptions=True
        )
        assert results.count(True) == 1
        assert all(isinstance(r, IdentityAlreadyLinked) for r in results if r is not True)


#: JSON values of every kind, nested, as a TOTP or passkey record holds them.
DATA = {
    "secret": "sealed:v1:abc",
    "codes": [{"hash": "h1", "used": False}, {"hash": "h2", "used": True}],
    "counter": 7,
    # The largest int32: the MongoDB-wire server hands larger integers back as doubles (JS
    # numbers), though a real mongod keeps int64.
    "big": 2**31 - 1,
    "label": None,
    "empty": {"list": [], "dict": {}},
    "mixed": [1, "a", None, True, [2, [3]]],
}


def credential(user_id: str, cid: str = "c1", kind: str = "totp", **changes: object) -> Credential:
    fields: dict[str, object] = {
        "id": cid,
        "user_id": user_id,
        "kind": kind,
        "data": DATA,
        "created_at": NOW,
        "updated_at": NOW,
    }
    fields.update(changes)
    return Credential(**fields)  # type: ignore[arg-type]


class TestCredentials:
    async def test_round_trip(self, store: Store) -> None:
        user_id = await make_user(store)
        stored = credential(user_id)
        assert await store.create_credential(stored)
        found = await store.find_credential("c1")
        assert found == stored and found is not None and found.version == 0
        # Exactly: `True == 1` would let a bool come back as an int unnoticed.
        assert json.dumps(found.data, sort_keys=True) == json.dumps(DATA, sort_keys=True)
        assert await store.find_credential("nope") is None

    async def test_no_credential_for_a_missing_user(self, store: Store) -> None:
        assert not await store.create_credential(credential("nope"))
        assert await store.find_credential("c1") is None

    async def test_an_id_is_unique_across_users(self, store: Store) -> None:
        alice = await make_user(store, "alice")
        bob = await make_user(store, "bob")
        assert await store.create_credential(credential(alice, kind="passkey"))
        with pytest.raises(CredentialAlreadyExists):
            await store.create_credential(credential(bob, kind="passkey", data={"other": 1}))
        with pytest.raises(CredentialAlreadyExists):
            await store.create_credential(credential(alice, kind="totp"))
        assert await store.find_credential("c1") == credential(alice, kind="passkey")
        assert await store.list_user_credentials(bob) == []

    async def test_concurrent_creates_of_one_id_have_one_winner(self, store: Store) -> None:
        users = [await make_user(store, f"u{i}") for i in range(10)]
        results = await asyncio.gather(
            *(store.create_credential(credential(u)) for u in users), return_exceptions=True
        )
        assert results.count(True) == 1
        assert all(isinstance(r, CredentialAlreadyExists) for r in results if r is not True)
        found = await store.find_credential("c1")
        assert found is not None and found.user_id == users[results.index(True)]

    async def test_list_by_user_and_kind_oldest_first(self, store: Store) -> None:
        alice = await make_user(store, "alice")
        bob = await make_user(store, "bob")
        later = NOW + timedelta(minutes=1)
        created = [  # not in the order they are listed in
            credential(alice, "p-late", "passkey", created_at=later),
            credential(alice, "p-b", "passkey"),
            credential(alice, "t", "totp", created_at=later),
            credential(alice, "p-a", "passkey"),  # the same time as p-b: by id
            credential(bob, "p-bob", "passkey"),
        ]
        for record in created:
            assert await store.create_credential(record)
        listed = await store.list_user_credentials(alice)
        assert [c.id for c in listed] == ["p-a", "p-b", "p-late", "t"]
        assert listed[0] == created[3]
        passkeys = await store.list_user_credentials(alice, "passkey")
        assert [c.id for c in passkeys] == ["p-a", "p-b", "p-late"]
        assert [c.id for c in await store.list_user_credentials(alice, "totp")] == ["t"]
        assert await store.list_user_credentials(alice, "recovery") == []
        assert await store.list_user_credentials("nope") == []

    async def test_update_is_compare_and_set_on_the_version(self, store: Store) -> None:
        user_id = await make_user(store)
        await store.create_credential(credential(user_id))
        later = NOW + timedelta(minutes=5)
        assert not await store.update_credential("c1", version=1, data={"x": 1}, now=later)
        assert await store.update_credential("c1", version=0, data={"step": 1}, now=later)
        assert not await store.update_credential("c1", version=0, data={"step": 2}, now=later)
        found = await store.find_credential("c1")
        # `data` replaced, not merged; `created_at`, the kind and the user untouched.
        assert found == credential(user_id, data={"step": 1}, updated_at=later, version=1)
        even_later = later + timedelta(minutes=5)
        assert await store.update_credential("c1", version=1, data={}, now=even_later)
        found = await store.find_credential("c1")
        assert found is not None
        assert (found.version, found.data, found.updated_at) == (2, {}, even_later)
        assert not await store.update_credential("nope", version=0, data={}, now=later)

    async def test_concurrent_updates_of_one_version_have_one_winner(self, store: Store) -> None:
        """Two logins with one TOTP code, or one passkey assertion replayed: one gets it."""
        user_id = await make_user(store)
        await store.create_credential(credential(user_id))
        wins = await asyncio.gather(
            *(store.update_credential("c1", version=0, data={"by": i}, now=NOW) for i in range(20))
        )
        assert wins.count(True) == 1
        found = await store.find_credential("c1")
        assert found is not None
        assert (found.version, found.data) == (1, {"by": wins.index(True)})

    async def test_delete_once(self, store: Store) -> None:
        user_id = await make_user(store)
        await store.create_credential(credential(user_id))
        await store.create_credential(credential(user_id, "c2"))
        assert await store.delete_credential("c1")
        assert not await store.delete_credential("c1")
        assert await store.find_credential("c1") is None
        assert not await store.update_credential("c1", version=0, data={}, now=NOW)
        assert [c.id for c in await store.list_user_credentials(user_id)] == ["c2"]
        assert await store.create_credential(credential(user_id))  # the id is free again

    async def test_concurrent_deletes_have_one_winner(self, store: Store) -> None:
        user_id = await make_user(store)
        await store.create_credential(credential(user_id))
        results = await asyncio.gather(*(store.delete_credential("c1") for _ in range(20)))
        assert results.count(True) == 1

    async def test_credentials_go_with_their_user(self, store: Store) -> None:
        alice = await make_user(store, "alice")
        bob = await make_user(store, "bob")
        await store.create_credential(credential(alice, "a1"))
        await store.create_credential(credential(alice, "a2", "passkey"))
        await store.create_credential(credential(bob, "b1"))
        assert await store.delete_user(alice)
        assert await store.find_credential("a1") is None
        assert await store.list_user_credentials(alice) == []
        assert await store.find_credential("b1") is not None
        assert await store.create_credential(credential(bob, "a1"))  # the id is free again

    async def test_a_user_deleted_while_credentials_are_created_keeps_none(
        self, store: Store
    ) -> None:
        user_id = await make_user(store)
        creates = [store.create_credential(credential(user_id, f"c{i}")) for i in range(10)]
        await asyncio.gather(*creates[:5], store.delete_user(user_id), *creates[5:])
        assert await store.list_user_credentials(user_id) == []
        assert [await store.find_credential(f"c{i}") for i in range(10)] == [None] * 10

    async def test_prune_leaves_credentials_alone(self, store: Store) -> None:
        user_id = await make_user(store)
        await store.create_credential(credential(user_id))
        await store.prune_expired(now=FAR + timedelta(days=365))
        assert await store.find_credential("c1") == credential(user_id)


async def test_tokens_may_carry_data_and_need_no_user(store: Store) -> None:
    token = OneTimeToken(
        token_hash=h("state"),
        kind="oauth-state",
        user_id=None,
        created_at=NOW,
        expires_at=FAR,
        data={"nonce": "n", "verifier": "v", "nested": {"a": [1, 2]}},
    )
    await store.create_token(token)
    assert await store.consume_token(h("state"), "oauth-state") == token


class TestUserAdmin:
    async def test_update_username_and_extra_keeps_uniqueness(self, store: Store) -> None:
        first = await make_user(store, "una")
        await make_user(store, "vic")
        later = NOW + timedelta(minutes=1)
        updated = await store.update_user(first, now=later, username="Uma", extra={"plan": "x"})
        assert updated is not None
        assert (updated.username, updated.extra, updated.updated_at) == (
            "Uma",
            {"plan": "x"},
            later,
        )
        assert await store.find_user_by_username("uma") == updated
        assert await store.find_user_by_username("una") is None
        with pytest.raises(UsernameAlreadyExists):
            await store.update_user(first, now=later, username="VIC")
        unchanged = await store.update_user(first, now=later)
        assert unchanged is not None and unchanged.username == "Uma"
        assert await store.update_user("nope", now=later, username="zed") is None
        assert await store.update_user("nope", now=later, username="vic") is None
        # Renamed away, a name is free again; the name taken for nobody was never held.
        assert await make_user(store, "una") and await make_user(store, "zed")

    async def test_list_and_search_with_paging(self, store: Store) -> None:
        ids = []
        for i, name in enumerate(["alpha", "alpine", "beta", "gamma"]):
            ids.append(
                (
                    await store.create_user(
                        username=name,
                        emails=[Email(f"{name}@example.com")],
                        extra={},
                        services={},
                        now=NOW + timedelta(seconds=i),
                    )
                ).id
            )
        everyone = await store.list_users()
        assert [u.id for u in everyone] == ids
        assert [u.username for u in await store.list_users(offset=1, limit=2)] == ["alpine", "beta"]
        assert await store.list_users(limit=0) == []  # nothing, not MongoDB's "no limit"
        assert [u.username for u in await store.list_users(search="ALP")] == ["alpha", "alpine"]
        assert [u.username for u in await store.list_users(search="gamma@")] == ["gamma"]
        assert await store.list_users(search="%") == []
        assert await store.list_users(search=".*") == []


async def test_touch_session_sets_last_used_only_on_valid_sessions(store: Store) -> None:
    user_id = await make_user(store)
    await store.create_session(session(user_id))
    later = NOW + timedelta(minutes=3)
    assert await store.touch_session("s1", now=later)
    found = await store.find_session("s1")
    assert found is not None and found.last_used_at == later
    assert found.expires_at == NOW + timedelta(days=1)  # the absolute expiry does not move
    await store.invalidate_session("s1", now=later)
    assert not await store.touch_session("s1", now=later)
    assert not await store.touch_session("nope", now=later)


def audit(number: int, **changes: object) -> AuditRecord:
    """The `number`-th record: ids (and times) go up with the number, as they would."""
    at = NOW + timedelta(seconds=number)
    values: dict[str, object] = {
        "id": f"{number:012d}",
        "at": at,
        "expires_at": at + timedelta(days=90),
        "event": "login_success",
        "user_id": "u1",
        "service": "password",
        "ip": "198.51.100.7",
        "user_agent": "phone",
    }
    values.update(changes)
    return AuditRecord(**values)  # type: ignore[arg-type]


class TestAudit:
    async def test_records_come_back_newest_first_field_for_field(self, store: Store) -> None:
        first = audit(1, event="login_error", code="InvalidCredentials", user_id=None)
        second = audit(2, actor_id="admin-1", session_id="s1", detail="users.deactivate")
        await store.add_audit(first)
        await store.add_audit(second)
        assert await store.list_audit(AuditQuery()) == [second, first]

    async def test_filters_combine_and_pages_follow_the_last_id(self, store: Store) -> None:
        for n in range(10):
            user, event = (
                ("u1" if n % 2 else "u2"),
                ("logout_success" if n % 3 else "login_success"),
            )
            await store.add_audit(audit(n, user_id=user, event=event))
        mine = await store.list_audit(AuditQuery(user_id="u1"))
        assert [r.id for r in mine] == [f"{n:012d}" for n in (9, 7, 5, 3, 1)]
        logins = await store.list_audit(AuditQuery(user_id="u1", events=("login_success",)))
        assert [r.id for r in logins] == [f"{n:012d}" for n in (9, 3)]
        window = AuditQuery(since=NOW + timedelta(seconds=2), until=NOW + timedelta(seconds=5))
        assert [r.id for r in await store.list_audit(window)] == [f"{n:012d}" for n in (4, 3, 2)]
        page = await store.list_audit(AuditQuery(limit=4))
        rest = await store.list_audit(AuditQuery(limit=4, before=page[-1].id))
        assert [r.id for r in page + rest] == [f"{n:012d}" for n in range(9, 1, -1)]

    async def test_expired_records_are_pruned_with_the_rest(self, store: Store) -> None:
        await store.add_audit(audit(1, expires_at=NOW + timedelta(days=1)))
        await store.add_audit(audit(2))
        assert await store.prune_expired(now=NOW + timedelta(days=2)) == 1
        assert [r.id for r in await store.list_audit(AuditQuery())] == [f"{2:012d}"]

    async def test_records_outlive_their_user(self, store: Store) -> None:
        user_id = await make_user(store)
        await store.add_audit(audit(1, user_id=user_id, event="user_deleted"))
        await store.delete_user(user_id)
        assert len(await store.list_audit(AuditQuery(user_id=user_id))) == 1

    async def test_counts_per_window_are_counted_by_event(self, store: Store) -> None:
        hour = timedelta(hours=1)
        start = NOW.replace(minute=0, second=0, microsecond=0)
        # Two sign-ins in the first hour (one at its very start), one in the third, a failure
        # in the second; a sign-in before the range and one at its end are left out.
        placed = [
            (start, "login_success"),
            (start + timedelta(minutes=59), "login_success"),
            (start + timedelta(hours=2, minutes=30), "login_success"),
            (start + timedelta(hours=1, seconds=1), "login_error"),
            (start - timedelta(seconds=1), "login_success"),
            (start + 3 * hour, "login_success"),
            (start + timedelta(minutes=5), "logout_success"),
        ]
        for n, (at, event) in enumerate(placed):
            record = audit(n, at=at, expires_at=at + timedelta(days=90), event=event)
            await store.add_audit(record)
        counts = await store.count_audit(
            ("login_success", "login_error", "refresh_token_reused"),
            since=start,
            step=hour,
            steps=3,
        )
        assert counts == {
            "login_success": [2, 0, 1],
            "login_error": [0, 1, 0],
            "refresh_token_reused": [0, 0, 0],
        }
        assert await store.count_audit((), since=start, step=hour, steps=3) == {}


class TestActiveSessions:
    async def test_only_valid_unexpired_sessions_count(self, store: Store) -> None:
        alice = await make_user(store)
        bob = await make_user(store, "bob")
        assert await store.count_active_sessions(now=NOW) == 0
        await store.create_session(session(alice, "s1"))
        await store.create_session(session(bob, "s2", expires_at=NOW + timedelta(hours=1)))
        await store.create_session(session(bob, "s3"))
        await store.invalidate_session("s3", now=NOW)
        assert await store.count_active_sessions(now=NOW) == 2
        assert await store.count_active_sessions(now=NOW + timedelta(hours=2)) == 1


class TestSessionUser:
    async def test_the_session_comes_with_its_user_as_they_are_now(self, store: Store) -> None:
        alice = await make_user(store, "alice", "alice@example.com")
        await store.create_session(session(alice, "s1"))
        found = await store.find_session_user("s1")
        assert found is not None
        assert found == (await store.find_session("s1"), await store.find_user_by_id(alice))
        await store.set_user_deactivated(alice, True, now=NOW)
        again = await store.find_session_user("s1")
        assert again is not None and again[1] is not None and again[1].deactivated
        assert await store.find_session_user("nope") is None
        await store.delete_user(alice)
        assert await store.find_session_user("s1") is None  # its sessions went with it
