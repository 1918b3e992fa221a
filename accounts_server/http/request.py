"""Reading a request: the JSON body within limits, the access token, the caller's address."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import HTTPConnection, Request

from ..errors import InvalidRequest, RequestTimeout, RequestTooLarge, UnsupportedMediaType
from ..types import ConnectionInfo

__all__ = [
    "BODY_TIMEOUT",
    "MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "access_token",
    "bearer_token",
    "connection_info",
    "query_int",
    "query_time",
    "read_json",
]

MAX_BODY_BYTES = 64 * 1024
#: Seconds a client has to send its whole body.
BODY_TIMEOUT = 10.0
MAX_JSON_DEPTH = 32
_MAX_USER_AGENT = 512
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _depth(value: object) -> int:
    """Nesting depth without recursion (a hostile body must not exhaust the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return deepest


async def read_json(
    request: Request, *, max_bytes: int = MAX_BODY_BYTES, arrival: float = BODY_TIMEOUT
) -> Mapping[str, Any]:
    """The body as a JSON object; an empty body is `{}` (the accounts-js client posts some
    routes without one). A body that has not fully arrived after `arrival` seconds is refused,
    so a stalled client cannot hold its connection (and a graceful shutdown) for ever.

    Raises:
        RequestTooLarge, RequestTimeout, UnsupportedMediaType, InvalidRequest.
    """
    raw = await read_raw(request, max_bytes=max_bytes, arrival=arrival)
    if not raw.strip():
        return {}
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType()
    try:
        # Strict RFC 8259: NaN, Infinity, lone surrogates and invalid UTF-8 are refused.
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest("body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object")
    # Fewer brackets than the limit cannot nest deeper than it: skip the walk.
    if raw.count(b"{") + raw.count(b"[") > MAX_JSON_DEPTH and _depth(body) > MAX_JSON_DEPTH:
        raise InvalidRequest(f"JSON nested deeper than {MAX_JSON_DEPTH}")
    return body


async def read_raw(request: Request, *, max_bytes: int, arrival: float) -> bytes:
    """The body's bytes: at most `max_bytes`, arrived within `arrival` seconds.

    Raises:
        RequestTooLarge, RequestTimeout.
    """
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise RequestTooLarge()
    try:
        async with asyncio.timeout(arrival):
            return await _read_body(request, declared is not None, max_bytes)
    except TimeoutError:
        raise RequestTimeout() from None


async def _read_body(request: Request, declared: bool, max_bytes: int) -> bytes:
    if declared:  # the server frames the body by its Content-Length: no more can arrive
        return await request.body()
    chunks, size = [], 0  # chunked: count as it comes
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise RequestTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def query_int(request: Request, name: str, default: int) -> int:
    """A non-negative integer query parameter.

    Raises:
        InvalidRequest: anything else.
    """
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdecimal() or not raw.isascii() or len(raw) > 6:
        raise InvalidRequest(f"{name} must be a non-negative integer")
    return int(raw)


def query_time(request: Request, name: str) -> datetime | None:
    """An ISO 8601 time query parameter (UTC when it names no offset).

    Raises:
        InvalidRequest: not such a time.
    """
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw) if len(raw) <= 40 else None
    except ValueError:
        moment = None
    if moment is None:
        raise InvalidRequest(f"{name} must be an ISO 8601 time, e.g. 2026-12-01T00:00:00Z")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def bearer_token(conn: HTTPConnection) -> str | None:
    """The `Authorization: Bearer` token (a bare token tolerated, as accounts-js does); an
    empty header means anonymous, not an error."""
    header = conn.headers.get("authorization", "").strip()
    if header[:7].lower() == "bearer ":
        header = header[7:].strip()
    return header or None


def access_token(request: Request, body: Mapping[str, Any] | None = None) -> str | None:
    """The bearer token, else a body `accessToken`, as accounts-js reads them."""
    if token := bearer_token(request):
        return token
    token = body.get("accessToken") if body is not None else None
    return token if isinstance(token, str) and token else None


def connection_info(request: Request, trusted_proxies: Sequence[Network] = ()) -> ConnectionInfo:
    """The peer address from the socket; `X-Forwarded-For` only when the peer is a trusted
    proxy, and then the right-most address that is not one (the rest can be forged)."""
    ip = request.client.host if request.client else None
    if trusted_proxies and ip is not None and _trusted(ip, trusted_proxies):
        for raw_hop in reversed(request.headers.get("x-forwarded-for", "").split(",")):
            hop = raw_hop.strip()
            if hop:
                ip = hop
                if not _trusted(hop, trusted_proxies):
                    break
    agent = request.headers.get("user-agent")
    return ConnectionInfo(ip=ip, user_agent=agent[:_MAX_USER_AGENT] if agent else None)


def _trusted(ip: str, networks: Sequence[Network]) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in network for network in networks)
