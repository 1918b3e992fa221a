"""Argon2id hashing off the event loop, with parameters that may not go below OWASP's floor,
and verification of legacy bcrypt hashes (accounts-js stores those) so they can be upgraded.

Hashing is deliberately slow and memory-hard, so it runs in worker threads (argon2-cffi and
bcrypt release the GIL) and a semaphore bounds how many run at once: a burst of logins queues
instead of exhausting memory, and work that waited past `max_wait` is refused (`Overloaded`,
503) rather than answered after the client gave up.

The worker threads are the hasher's own, as many as the semaphore lets hash at once, and named
`PasswordHasher.thread_name_prefix`. Each argon2id hash mallocs its whole `memory_cost` (19 MiB
by default) in the thread that runs it, and glibc keeps a freed block in that thread's arena:
on asyncio's default executor (`min(32, os.cpu_count() + 4)` threads, the host's count even
in a container) RSS grew by ~19 MiB per thread that ever hashed, whatever the semaphore said.
Here the number of threads is the bound, and the buffers go back to the kernel after each hash
(`_mmap_hash_buffers`).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

import argon2
import bcrypt
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from accounts_server import ConfigurationError, Overloaded

_T = TypeVar("_T")
#: bcrypt only ever read the first 72 bytes; newer bcrypt releases refuse longer input.
_BCRYPT_MAX_BYTES = 72

__all__ = ["PasswordHasher"]

#: OWASP Password Storage Cheat Sheet (argon2id): m=19 MiB, t=2, p=1 is the baseline; its
#: equivalent trade-offs all keep memory x passes at or above ~35 MiB.
_MIN_MEMORY_KIB = 7 * 1024
_MIN_MEMORY_TIMES_PASSES = 7 * 1024 * 5


#: glibc's `mallopt` parameter (malloc.h), and the size from which it then always mmaps: below
#: any buffer argon2 may use here (the floor is 7 MiB), above what the server mallocs often.
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 4 * 1024 * 1024


@functools.cache
def _mmap_hash_buffers() -> None:
    """Have glibc mmap argon2's buffer and unmap it when freed, whichever thread hashed.

    Why: glibc mmaps a block of at least M_MMAP_THRESHOLD (128 KiB at start), but when such a
    block is freed it raises the threshold to the block's size (up to 32 MiB). From the second
    hash on, the 19 MiB come from the thread's arena and stay there once freed. Setting the
    threshold also stops that raising, so every buffer is unmapped on free.

    Not `malloc_trim(0)` after each hash: it frees pages inside every arena, but trims only
    the main arena's top, and a freed argon2 buffer merges into the top of the worker's arena.
    Measured with glibc 2.36, 8 threads, 48 hashes and verifies: RSS +152 MiB with no change,
    +152 MiB with the trim, +0.2 MiB with this.

    The cost, which any way of returning the memory pays: each hash faults its buffer in
    afresh (4,865 minor faults at 19 MiB). On the 2-core VM measured, CPU per verify (median
    of 5 x 20): 25 ms keeping the buffers, 39 ms with this; with transparent huge pages for
    malloc (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, 777 faults), 28 ms. Hence opt-in
    (`PasswordHasher(return_memory=True)`); a threshold set in the environment is left alone.

    Process-wide, as malloc is, so it runs once, in the first hashing thread (before its
    first hash). It does nothing off glibc (musl, macOS, Windows).
    """
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if sys.platform != "linux" or any(
        f"MALLOC_{name.upper()}_THRESHOLD_" in os.environ
        or f"glibc.malloc.{name}_threshold" in tunables
        for name in ("mmap", "trim")
    ):
        return
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, ValueError, AttributeError):  # no such confstr name, or no mallopt
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)


def _usable_cpus() -> int:
    """The cores this process may run on (a container's or `taskset`'s limit, not the host's):
    more hashes at once than cores only adds memory and cache misses (measured: two argon2id
    verifies sharing one core give 10 % fewer logins per second than one at a time)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True, slots=True, kw_only=True)
class PasswordHasher:
    """Hashes on `max_concurrent` threads of its own, started on first use and idle between
    hashes, so memory is bounded by the hashing concurrency: each thread keeps at most one
    argon2 buffer (19 MiB) in its malloc arena, and RSS stays flat under load (the soak in
    benchmarks/soak.py: x1.001 over 120 s; the default executor it replaces grew with its up
    to 32 threads). `return_memory=True` also gives each buffer back to the kernel after its
    hash (`_mmap_hash_buffers`), for memory-tight deployments: it costs ~60 % more CPU per hash
    (25 -> 39 ms here, page faults), so it is not the default.

    `close()` ends the threads; nothing has to: the server has no close hook for services
    (`AccountsServer.close()` drains and closes the store), and idle threads neither hold work
    nor delay exit (`concurrent.futures` wakes and joins its workers at interpreter exit, and
    they end when the hasher is garbage-collected).

    Raises:
        ConfigurationError: parameters under the OWASP floor.
    """

    #: The names of the hashing threads start with this (`threading.enumerate()`, py-spy).
    thread_name_prefix: ClassVar[str] = "accounts-password-hash"

    memory_cost: int = 19 * 1024
    time_cost: int = 2
    parallelism: int = 1
    max_concurrent: int = field(default_factory=_usable_cpus)
    max_wait: float = 5.0
    return_memory: bool = False
    _hasher: argon2.PasswordHasher = field(init=False, repr=False, compare=False)
    _slots: asyncio.Semaphore = field(init=False, repr=False, compare=False)
    _dummy: str = field(init=False, repr=False, compare=False)
    _threads: ThreadPoolExecutor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (
            self.memory_cost < _MIN_MEMORY_KIB
            or self.time_cost < 1
            or self.parallelism < 1
            or self.memory_cost * self.time_cost < _MIN_MEMORY_TIMES_PASSES
        ):
            raise ConfigurationError(
                "argon2id parameters below the OWASP floor (e.g. m=19 MiB, t=2) are refused"
            )
        if self.max_concurrent < 1:
            raise ConfigurationError("max_concurrent must be at least 1")
        hasher = argon2.PasswordHasher(
            time_cost=self.time_cost,
            memory_cost=self.memory_cost,
            parallelism=self.parallelism,
            type=argon2.Type.ID,
        )
        object.__setattr__(self, "_hasher", hasher)
        object.__setattr__(self, "_slots", asyncio.Semaphore(self.max_concurrent))
        object.__setattr__(self, "_dummy", hasher.hash("accounts-server dummy password"))
        # As many threads as slots: a hash whose caller was cancelled still holds its thread
        # until it finishes, so the next one queues here instead of adding a thread.
        threads = ThreadPoolExecutor(
            max_workers=self.max_concurrent,
            thread_name_prefix=self.thread_name_prefix,
            initializer=_mmap_hash_buffers if self.return_memory else None,
        )
        object.__setattr__(self, "_threads", threads)

    def close(self) -> None:
        """Let the hashes in progress finish, then end the threads; hashing afterwards raises
        `RuntimeError`. Does not wait (at most one hash per thread)."""
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def _in_thread(self, fn: Callable[[], _T]) -> _T:
        try:
            # Not wait_for: on Python 3.11 it swallows a cancellation that arrives as the slot
            # is granted, and the cancelled caller goes on to hash.
            async with asyncio.timeout(self.max_wait):
                await self._slots.acquire()
        except TimeoutError:
            raise Overloaded() from None
        try:
            return await asyncio.get_running_loop().run_in_executor(self._threads, fn)
        finally:
            self._slots.release()

    async def hash(self, password: str) -> str:
        """Raises:
        Overloaded: waited more than `max_wait` for a hashing slot.
        """
        return await self._in_thread(lambda: self._hasher.hash(password))

    async def verify(self, encoded: str, password: str) -> bool:
        """True if `password` matches; False for a mismatch or an unreadable hash.

        Raises:
            Overloaded: waited more than `max_wait` for a hashing slot.
        """
        return await self._in_thread(lambda: self._verify(encoded, password))

    async def verify_bcrypt(self, encoded: str, password: str) -> bool:
        """A legacy `$2a$`/`$2b$`/`$2y$` hash, as accounts-js stored them."""

        def check() -> bool:
            try:
                normalized = "$2b$" + encoded[4:] if encoded.startswith("$2y$") else encoded
                secret = password.encode()[:_BCRYPT_MAX_BYTES]
                return bcrypt.checkpw(secret, normalized.encode())
            except ValueError:
                return False

        return await self._in_thread(check)

    async def verify_dummy(self, password: str) -> None:
        """Spend one verification, as for a real user, when there is none (no enumeration)."""
        await self.verify(self._dummy, password)

    def _verify(self, encoded: str, password: str) -> bool:
        try:
            return self._hasher.verify(encoded, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, encoded: str) -> bool:
        return self._hasher.check_needs_rehash(encoded)
