"""The password service through the server and its public extension points."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
import types
from typing import ClassVar

import pytest

from accounts_password import PasswordHasher, PasswordPolicy, PasswordService
from accounts_server import (
    AccountsServer,
    ConfigurationError,
    ConnectionInfo,
    InvalidCredentials,
    InvalidPassword,
    Store,
)

from ..conftest import MakeServer
from ..helpers import register

INFO = ConnectionInfo()


class CountingHasher(PasswordHasher):
    """The real argon2id hasher, counting verifications through its public methods."""

    verified: ClassVar[list[str]] = []

    async def verify(self, encoded: str, password: str) -> bool:
        CountingHasher.verified.append(encoded)
        return await super().verify(encoded, password)


async def stored_hash(store: Store, user_id: str) -> str:
    data = await store.get_service_data(user_id, "password")
    assert data is not None
    return str(data["argon2"])


async def test_hash_is_argon2id_at_the_owasp_baseline(server: AccountsServer, store: Store) -> None:
    account = await register(server)
    encoded = await stored_hash(store, account.user_id)
    assert encoded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert account.password not in encoded


async def test_unknown_user_costs_the_same_one_verification(make_server: MakeServer) -> None:
    server = make_server(services=[PasswordService(hasher=CountingHasher())])
    account = await register(server)
    counts = []
    for params in (
        {"user": account.email, "password": "wrong password"},
        {"user": "ghost@example.com", "password": "wrong password"},
        {"user": {"id": "no-such-id"}, "password": "wrong password"},
    ):
        CountingHasher.verified.clear()
        with pytest.raises(InvalidCredentials):
            await server.login_with_service("password", params, INFO)
        counts.append(len(CountingHasher.verified))
    assert counts == [1, 1, 1]


async def test_rehash_on_login_when_parameters_change(
    make_server: MakeServer, store: Store
) -> None:
    account = await register(make_server())
    before = await stored_hash(store, account.user_id)
    stronger = make_server(services=[PasswordService(hasher=PasswordHasher(time_cost=3))])
    await stronger.login_with_service("password", account.credentials(), INFO)
    after = await stored_hash(store, account.user_id)
    assert before != after and ",t=3," in after
    await stronger.login_with_service("password", account.credentials(), INFO)
    assert await stored_hash(store, account.user_id) == after


async def test_passwords_are_nfkc_normalized(server: AccountsServer) -> None:
    account = await register(server, password="ｐａｓｓｗｏｒｄ-fullwidth")
    params = {"user": account.username, "password": "password-fullwidth"}
    assert (await server.login_with_service("password", params, INFO)).user.id == account.user_id


async def test_configurable_minimum_length(make_server: MakeServer) -> None:
    server = make_server(services=[PasswordService(policy=PasswordPolicy(min_length=15))])
    with pytest.raises(InvalidPassword):
        await register(server, password="fourteen chars")
    await register(server, password="fifteen chars!!")


@pytest.mark.parametrize(
    "make",
    [
        lambda: PasswordHasher(memory_cost=4096),
        lambda: PasswordHasher(memory_cost=19456, time_cost=1),
        lambda: PasswordHasher(parallelism=0),
        lambda: PasswordPolicy(min_length=4),
        lambda: PasswordPolicy(max_length=4096),
    ],
)
def test_weak_settings_are_refused(make: object) -> None:
    with pytest.raises(ConfigurationError):
        make()  # type: ignore[operator]


def test_discovered_by_entry_point() -> None:
    from accounts_server.cli import load_services

    (service,) = load_services(("password",))
    assert isinstance(service, PasswordService)


# -- where hashing runs, and what memory it keeps ---------------------------------------------

_ARGON2_CALLS = {"hash_secret", "verify_secret"}  # argon2.low_level, under PasswordHasher


def _new_threads(before: set[threading.Thread], prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before and t.name.startswith(prefix)]


async def test_hashing_runs_on_its_own_bounded_threads() -> None:
    """Hashing never lands on asyncio's default executor (up to 32 threads, each keeping a
    19 MiB buffer), and no more threads hash than the hashing bound allows."""
    hasher = PasswordHasher(max_wait=60)
    prefix = PasswordHasher.thread_name_prefix
    ran_on: set[str] = set()

    def record(frame: types.FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code.co_name in _ARGON2_CALLS:
            ran_on.add(threading.current_thread().name)

    async def hash_and_verify(n: int) -> bool:
        return await hasher.verify(await hasher.hash(f"password {n}"), f"password {n}")

    before = set(threading.enumerate())
    threading.setprofile(record)  # every thread started from here on
    try:
        results = await asyncio.gather(
            *(hash_and_verify(n) for n in range(4 * hasher.max_concurrent))
        )
    finally:
        threading.setprofile(None)
    try:
        assert all(results)
        assert ran_on, "no argon2 call was seen"
        assert all(name.startswith(prefix) for name in ran_on), ran_on
        assert not _new_threads(before, "asyncio_")
        assert 1 <= len(_new_threads(before, prefix)) <= hasher.max_concurrent
    finally:
        hasher.close()


@pytest.mark.parametrize("turns", [0, 1, 2])
async def test_cancelled_while_the_slot_is_granted_stays_cancelled(turns: int) -> None:
    """The cancellation of a caller waiting for a hashing slot is not lost when the slot is
    granted in the same turn (0 and 1 here: Python 3.11's wait_for returned the slot and the
    caller went on to hash)."""
    hasher = PasswordHasher(max_concurrent=1, max_wait=60)
    try:
        encoded = await hasher.hash("a password")
        first = asyncio.create_task(hasher.verify(encoded, "a password"))
        await asyncio.sleep(0)  # first holds the only slot
        waiting = asyncio.create_task(hasher.verify(encoded, "a password"))
        await asyncio.sleep(0)  # waiting queues for it
        assert await first  # its slot is handed to waiting
        for _ in range(turns):
            await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await hasher.verify(encoded, "a password")  # and the slot came back
    finally:
        hasher.close()


def _statm_resident() -> int:
    """Resident bytes of this process (Linux /proc/self/statm, second field, in pages)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (AttributeError, ValueError, OSError):
        return False


@pytest.mark.skipif(
    not (sys.platform == "linux" and os.path.exists("/proc/self/statm") and _glibc()),
    reason="reads RSS from /proc/self/statm, and the retained buffers are glibc's arenas",
)
@pytest.mark.skipif(
    any(
        f"MALLOC_{name.upper()}_THRESHOLD_" in os.environ
        or f"glibc.malloc.{name}_threshold" in os.environ.get("GLIBC_TUNABLES", "")
        for name in ("mmap", "trim")
    ),
    reason="the environment sets glibc's malloc thresholds, which the hasher then leaves alone",
)
async def test_threads_give_hash_buffers_back_when_asked() -> None:
    """`return_memory=True`: a hash's 19 MiB buffer is returned after it, not kept in the
    hashing thread's malloc arena: RSS after many hashes on several threads stays near a warm
    baseline. A kept buffer shows as a whole 19 MiB (without the return, run alone: 5 to 7 x
    19 MiB; after other tests, whose threads left arenas that these reuse, less: 19 to 38 MiB
    here), and the return leaves ~0.2 MiB, so half a buffer splits the two with room either
    side."""
    threads = 8
    buffer = PasswordHasher().memory_cost * 1024
    hasher = PasswordHasher(max_concurrent=threads, max_wait=120, return_memory=True)
    try:
        encoded = await hasher.hash("warm-up password")  # imports, one thread, its arena
        assert await hasher.verify(encoded, "warm-up password")
        gc.collect()
        baseline = _statm_resident()
        for burst in range(3):  # bursts so that every thread hashes, then one at a time
            await asyncio.gather(*(hasher.hash(f"burst {burst}.{n}") for n in range(threads)))
        for n in range(2 * threads):
            assert await hasher.verify(encoded, "warm-up password"), n
        gc.collect()
        growth = _statm_resident() - baseline
    finally:
        hasher.close()
    assert growth < buffer // 2, f"RSS grew {growth / 2**20:.1f} MiB over the warm baseline"
