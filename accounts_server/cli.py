"""The `accounts-server` command line: `serve` runs the app under uvicorn on the embedded
SQLite default; `keys` and `prune` are the housekeeping around it."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from datetime import timedelta
from importlib.metadata import entry_points
from pathlib import Path
from typing import Literal

import click

from .errors import ConfigurationError
from .server import AccountsServer
from .services import LoginService
from .sessions import SessionConfig
from .stores.base import Store
from .stores.sqlite import SQLiteStore
from .tokens import KeyRing, SigningKey, TokenConfig

__all__ = ["main"]

SERVICE_GROUP = "accounts_server.services"


def load_services(names: tuple[str, ...]) -> list[LoginService]:
    """Instantiate the login services installed under the entry-point group; all of them when
    `names` is empty.

    Raises:
        ConfigurationError: a named service is not installed.
    """
    found = {ep.name: ep for ep in entry_points(group=SERVICE_GROUP)}
    missing = sorted(set(names) - set(found))
    if missing:
        raise ConfigurationError(
            f"login service(s) not installed: {', '.join(missing)}; installed: "
            f"{', '.join(sorted(found)) or 'none'}"
        )
    return [found[name].load()() for name in (names or tuple(sorted(found)))]


def load_or_create_key(path: Path) -> SigningKey:
    """The signing key in `path`, created (Ed25519, mode 0600) on first start so tokens
    survive a restart.

    Raises:
        ConfigurationError: the file is readable by group or others, or not a usable key.
    """
    try:
        return _create_key_file(path, "EdDSA")
    except FileExistsError:
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigurationError(
                f"{path} is accessible to group or others; run: chmod 600 {path}"
            ) from None
        return SigningKey.from_file(path)


def _create_key_file(path: Path, algorithm: Literal["EdDSA", "ES256"]) -> SigningKey:
    """A new key written with mode 0600 from the first byte; never overwrites (O_EXCL).

    Raises:
        FileExistsError: `path` exists.
    """
    key = SigningKey.generate(algorithm)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(key.private_pem())
    return key


@click.group()
@click.version_option(package_name="accounts-server")
def main() -> None:
    """accounts-server: authentication and tokens, accounts-js compatible."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--db",
    "db_path",
    default="accounts.db",
    show_default=True,
    envvar="ACCOUNTS_DB",
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite file, created on first start.",
)
@click.option(
    "--mongodb-url",
    envvar="ACCOUNTS_MONGODB_URL",
    help="Use MongoDB instead of SQLite (needs the [mongo] extra).",
)
@click.option("--mongodb-db", default="accounts", show_default=True, help="MongoDB database.")
@click.option(
    "--key",
    "key_paths",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM private key (Ed25519 or P-256). Repeat to rotate: the first signs, all verify. "
    "Default: accounts.key next to the database, created on first start.",
)
@click.option("--issuer", default="accounts-server", show_default=True)
@click.option("--audience", default="accounts-server/api", show_default=True)
@click.option(
    "--access-lifetime",
    default=15,
    show_default=True,
    type=click.IntRange(1, 60),
    help="Access-token lifetime, minutes.",
)
@click.option(
    "--session-lifetime",
    default=30,
    show_default=True,
    type=click.IntRange(1, 365),
    help="Absolute session lifetime, days.",
)
@click.option(
    "--reuse-grace",
    default=0,
    show_default=True,
    type=click.IntRange(0, 30),
    help="Seconds a rotated refresh token still yields the same successor (the accounts-js "
    "client refreshes concurrently; 0 is strict).",
)
@click.option(
    "--service",
    "service_names",
    multiple=True,
    help="Login service to load (default: all installed).",
)
@click.option(
    "--trusted-proxy", multiple=True, help="Proxy network whose X-Forwarded-For is believed."
)
@click.option("--log-level", default="info", show_default=True)
def serve(
    host: str,
    port: int,
    db_path: Path,
    mongodb_url: str | None,
    mongodb_db: str,
    key_paths: tuple[Path, ...],
    issuer: str,
    audience: str,
    access_lifetime: int,
    session_lifetime: int,
    reuse_grace: int,
    service_names: tuple[str, ...],
    trusted_proxy: tuple[str, ...],
    log_level: str,
) -> None:
    """Run the server under uvicorn (uvloop and httptools when installed)."""
    import uvicorn

    from .http import create_app

    try:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        if key_paths:
            keys = [SigningKey.from_file(path) for path in key_paths]
        else:
            keys = [load_or_create_key(db_path.with_name("accounts.key"))]
        server = AccountsServer(
            store=_open_store(db_path, mongodb_url, mongodb_db),
            tokens=TokenConfig(
                keys=KeyRing(keys),
                issuer=issuer,
                audience=audience,
                access_lifetime=timedelta(minutes=access_lifetime),
            ),
            sessions=SessionConfig(
                lifetime=timedelta(days=session_lifetime),
                reuse_grace=timedelta(seconds=reuse_grace),
            ),
            services=load_services(service_names),
        )
    except ConfigurationError as exc:
        raise click.ClickException(exc.message) from exc
    app = create_app(
        server,
        trusted_proxies=trusted_proxy,
        close_store_on_shutdown=True,
        prune_every=timedelta(hours=1),
    )
    where = f"MongoDB {mongodb_db}" if mongodb_url else f"db {db_path}"
    click.echo(
        f"accounts-server on http://{host}:{port}/accounts  ({where}, "
        f"services: {', '.join(server.services) or 'none'})",
        err=True,
    )
    # Our app reads X-Forwarded-For itself, and only from --trusted-proxy.
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        proxy_headers=False,
        server_header=False,
    )


def _open_store(db_path: Path, mongodb_url: str | None, mongodb_db: str) -> Store:
    if not mongodb_url:
        return SQLiteStore(db_path)
    try:
        from .stores.mongo import MongoStore
    except ImportError as exc:
        raise ConfigurationError(str(exc)) from exc
    return MongoStore.from_url(mongodb_url, mongodb_db)


@main.command()
@click.option(
    "--db",
    "db_path",
    default="accounts.db",
    show_default=True,
    envvar="ACCOUNTS_DB",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
)
def prune(db_path: Path) -> None:
    """Delete expired sessions from the database."""

    async def run() -> int:
        from datetime import UTC, datetime

        store = SQLiteStore(db_path)
        try:
            return await store.prune_expired(now=datetime.now(UTC))
        finally:
            await store.close()

    click.echo(f"pruned {asyncio.run(run())} expired session(s)")


@main.group()
def keys() -> None:
    """Signing keys."""


@keys.command("generate")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--algorithm", type=click.Choice(["EdDSA", "ES256"]), default="EdDSA")
def keys_generate(path: Path, algorithm: str) -> None:
    """Write a new private key (mode 0600). To rotate, pass it first with --key and keep the
    old key after it until every token it signed has expired."""
    try:
        key = _create_key_file(path, "ES256" if algorithm == "ES256" else "EdDSA")
    except FileExistsError:
        raise click.ClickException(f"{path} exists; refusing to overwrite a key") from None
    click.echo(f"kid {key.kid}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
