"""Reading an accounts-js database (`@accounts/mongo`) for `accounts_server.importing`.

Only reads: one cursor in `_id` order, fetched in batches (a batch is imported well within the
server's 10 min cursor timeout; a run cut short is repeated from the start, which the import
makes cheap). Not paged by `_id` ranges: ids of mixed types (an `idProvider` writing strings
beside ObjectIds) would be cut at the first type boundary, as `$gt` compares within a type.
ObjectIds become their hex strings (the user ids accounts-js hands out), so documents leave
here as plain Python values.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

try:
    from bson import ObjectId
    from pymongo import ASCENDING, AsyncMongoClient
    from pymongo.errors import PyMongoError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "importing from accounts-js needs the [mongo] extra: pip install 'accounts-server[mongo]'"
    ) from exc

from ..errors import StoreUnavailable

__all__ = ["AccountsJsSource"]


class AccountsJsSource:
    """The users of an accounts-js database at `url`, `db_name` (its `collection_name`
    option: `users` unless the app changed it)."""

    def __init__(
        self, url: str, db_name: str, *, collection: str = "users", batch_size: int = 500
    ) -> None:
        self._client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            url, serverSelectionTimeoutMS=3000, connectTimeoutMS=2000, socketTimeoutMS=30000
        )
        self._users = self._client[db_name][collection]
        self._batch = batch_size

    async def count(self) -> int:
        """Raises:
        StoreUnavailable: the source database cannot be reached.
        """
        try:
            return int(await self._users.count_documents({}))
        except PyMongoError as exc:
            raise StoreUnavailable("the accounts-js database cannot be reached") from exc

    async def users(self) -> AsyncIterator[dict[str, Any]]:
        """Every user document, in `_id` order.

        Raises:
            StoreUnavailable: the source database went away.
        """
        cursor = self._users.find({}).sort("_id", ASCENDING).batch_size(self._batch)
        try:
            async for doc in cursor:
                yield _plain(doc)
        except PyMongoError as exc:
            raise StoreUnavailable("the accounts-js database went away") from exc
        finally:
            await cursor.close()

    async def close(self) -> None:
        await self._client.close()


def _plain(value: Any) -> Any:
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
