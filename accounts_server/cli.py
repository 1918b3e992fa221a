"""The `accounts-server` command line: `serve` runs the app under uvicorn on the embedded
SQLite default; `keys` and `prune` are the housekeeping around it."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import getpass
import inspect
import json
import logging
import os
import signal
import stat
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from importlib.metadata import entry_points
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast
from urllib.parse import urlsplit

import click

from .admin import Admin, log_admin_action
from .audit import AUDITED, AuditConfig, audit_query
from .config import config_option, describe, environment_names, service_tables
from .errors import AccountsError, ConfigurationError, UserNotFound
from .http.ui import UIConfig
from .logs import JSONFormatter
from .mail import LogMailer, Mailer, SMTPMailer
from .ratelimit import RateLimits
from .sealing import SealingKeys
from .server import AccountsServer
from .services import LoginService, SecretService, ServiceSettings
from .sessions import SessionConfig
from .stores.base import AuditRecord, Store, canonical_email
from .stores.sqlite import SQLiteStore
from .tokens import DEFAULT_AUDIENCE, DEFAULT_ISSUER, KeyRing, SigningKey, TokenConfig
from .types import Session, User

if TYPE_CHECKING:
    from rich.table import Table

    from .http.ui import UIConfig
    from .importing import ImportReport

_T = TypeVar("_T")

__all__ = ["main"]

SERVICE_GROUP = "accounts_server.services"
SEALING_KEY_FILE = "accounts.sealing.key"
DEFAULT_SITE_URL = "http://localhost:3000"


def installed_services() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=SERVICE_GROUP))


def load_services(
    names: Sequence[str],
    *,
    tables: Mapping[str, Mapping[str, Any]] | None = None,
    mailer: Mailer | None = None,
    site_url: str = DEFAULT_SITE_URL,
    mail_templates: Path | None = None,
) -> list[LoginService]:
    """Build the login services installed under the entry-point group (all of them when
    `names` is empty), each from its `ServiceSettings`. A factory that takes no argument
    (a class, say) is called without; one that answers None has nothing to serve without
    settings (OAuth with no provider) and is left out, unless it was asked for.

    Raises:
        ConfigurationError: a service asked for or configured is not installed, or refuses
            its settings.
    """
    tables = tables or {}
    found = {ep.name: ep for ep in entry_points(group=SERVICE_GROUP)}
    missing = sorted((set(names) | {n for n, t in tables.items() if t}) - set(found))
    if missing:
        raise ConfigurationError(
            f"login service(s) not installed: {', '.join(missing)}; installed: "
            f"{', '.join(sorted(found)) or 'none'}"
        )
    services = []
    for name in names or sorted(found):
        values = tables.get(name, {})
        settings = ServiceSettings(
            name=name,
            values=values,
            mailer=mailer,
            site_url=site_url,
            mail_templates=mail_templates,
        )
        service = _build(found[name].load(), settings)
        if service is not None:
            services.append(service)
        elif name in names or values:
            raise ConfigurationError(f"services.{name}: nothing to serve with these settings")
    return services


def _build(factory: Callable[..., Any], settings: ServiceSettings) -> LoginService | None:
    try:
        takes_settings = bool(inspect.signature(factory).parameters)
    except (TypeError, ValueError):  # a builtin without a signature: assume the new contract
        takes_settings = True
    if takes_settings:
        return cast("LoginService | None", factory(settings))
    if settings.values:
        raise ConfigurationError(f"services.{settings.name}: this service takes no settings")
    return cast("LoginService", factory())


def _export_service_settings(settings: Mapping[str, str | None]) -> None:
    """Put `serve`'s options for a login service (`--webauthn-rp-id`) into `os.environ` as
    that service's `ACCOUNTS_<NAME>_<KEY>` variables, only those given, so they reach its
    settings as a variable of its own would (over the file's table)."""
    for name, value in settings.items():
        if value is not None:
            os.environ[name] = value


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


def load_or_create_sealing_keys(paths: Sequence[Path], default: Path) -> SealingKeys:
    """The sealing keys in `paths`, or in `default`, created (mode 0600) on first start: they
    keep users' second factors readable across restarts, so back the file up with the
    database, but never in the same place.

    Raises:
        ConfigurationError: a file readable by group or others, or not a key.
    """
    if not paths:
        with contextlib.suppress(FileExistsError):
            SealingKeys.write_key_file(default)
        paths = [default]
    return SealingKeys.from_files(paths)


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


def _origins(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[str, ...]:
    """`--webauthn-origin` values, each possibly several separated by commas (click splits
    the variable on whitespace only), as the service's own `ACCOUNTS_WEBAUTHN_ORIGINS` reads."""
    origins = tuple(origin for value in values for origin in value.replace(",", " ").split())
    if values and not origins:
        raise click.BadParameter("give an origin, such as https://app.example.com")
    return origins


_SESSIONS = SessionConfig()
_AUDIT = AuditConfig()
_TOKEN_DEFAULTS = {f.name: f.default for f in fields(TokenConfig)}
_UNITS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}


def _duration(
    flag: str, default: object, unit: str, help: str
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """An integer option in `unit`s whose default is the config class's own (one fact, one
    place); the config class checks the range and says what is allowed."""
    assert isinstance(default, timedelta)
    return click.option(
        flag,
        default=int(default.total_seconds()) // _UNITS[unit],
        show_default=True,
        type=click.IntRange(0),
        help=f"{help}, in {unit}.",
    )


@click.group()
@click.version_option(package_name="accounts-server")
def main() -> None:
    """accounts-server: authentication and tokens, accounts-js compatible."""
    # Admin actions are audited on this logger; an operator sees them on stderr.
    logging.basicConfig(format="%(name)s: %(message)s")
    logging.getLogger("accounts_server.audit").setLevel(logging.INFO)


@dataclass(frozen=True, slots=True)
class Database:
    """Which database `serve` and every management command use: PostgreSQL or MongoDB when
    given their URL (one of them), else the SQLite file."""

    db_path: Path
    mongodb_url: str | None = None
    mongodb_db: str = "accounts"
    postgres_url: str | None = None

    def __post_init__(self) -> None:
        if self.mongodb_url and self.postgres_url:
            raise ConfigurationError("give --mongodb-url or --postgres-url, not both")

    @property
    def is_sqlite(self) -> bool:
        return not self.mongodb_url and not self.postgres_url

    def describe(self) -> str:
        if self.postgres_url:
            # Host and database of a URL; nothing of a keyword string, which may hold a
            # password anywhere in it.
            if not self.postgres_url.startswith(("postgresql://", "postgres://")):
                return "PostgreSQL"
            where = urlsplit(self.postgres_url)
            return f"PostgreSQL {where.hostname or 'localhost'}{where.path or ''}"
        return f"MongoDB {self.mongodb_db}" if self.mongodb_url else f"db {self.db_path}"

    def open(self) -> Store:
        """Raises:
        ConfigurationError: the extra the database needs is not installed.
        """
        try:
            if self.postgres_url:
                from .stores.postgres import PostgresStore

                return PostgresStore(self.postgres_url)
            if self.mongodb_url:
                from .stores.mongo import MongoStore

                return MongoStore.from_url(self.mongodb_url, self.mongodb_db)
        except ImportError as exc:
            raise ConfigurationError(str(exc)) from exc
        return SQLiteStore(self.db_path)


def store_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The database options every management command shares with `serve`, handed to the
    command as one `database: Database`."""

    given = fn

    @functools.wraps(given)
    def command(
        *args: Any,
        db_path: Path,
        mongodb_url: str | None,
        mongodb_db: str,
        postgres_url: str | None,
        **kwargs: Any,
    ) -> Any:
        try:
            database = Database(db_path, mongodb_url, mongodb_db, postgres_url)
        except ConfigurationError as exc:
            raise click.ClickException(exc.message) from exc
        return given(*args, database=database, **kwargs)

    fn = command
    fn = click.option(
        "--postgres-url",
        envvar="ACCOUNTS_POSTGRES_URL",
        help="Use PostgreSQL instead of SQLite: postgresql://user@host/db (needs the "
        "[postgres] extra). Give the password by reference in a config file.",
    )(fn)
    fn = click.option(
        "--mongodb-db",
        default="accounts",
        show_default=True,
        envvar="ACCOUNTS_MONGODB_DB",
        help="MongoDB database.",
    )(fn)
    fn = click.option(
        "--mongodb-url",
        envvar="ACCOUNTS_MONGODB_URL",
        help="Use MongoDB instead of SQLite (needs the [mongo] extra).",
    )(fn)
    return click.option(
        "--db",
        "db_path",
        default="accounts.db",
        show_default=True,
        envvar="ACCOUNTS_DB",
        type=click.Path(dir_okay=False, path_type=Path),
        help="SQLite file, created on first start.",
    )(fn)


@config_option
@environment_names
@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@store_options
@click.option(
    "--key",
    "key_paths",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM private key (Ed25519 or P-256). Repeat to rotate: the first signs, all verify. "
    "Default: accounts.key next to the database, created on first start.",
)
@click.option(
    "--sealing-key",
    "sealing_key_paths",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Key file sealing second-factor secrets at rest. Repeat to rotate: the first seals, "
    "all open. Default: accounts.sealing.key next to the database, created on first start.",
)
@click.option("--issuer", default=DEFAULT_ISSUER, show_default=True)
@click.option("--audience", default=DEFAULT_AUDIENCE, show_default=True)
@_duration(
    "--access-lifetime", _TOKEN_DEFAULTS["access_lifetime"], "minutes", "Access-token lifetime"
)
@_duration("--session-lifetime", _SESSIONS.lifetime, "days", "Absolute session lifetime")
@_duration(
    "--short-session-lifetime",
    _SESSIONS.short_lifetime,
    "hours",
    "Session lifetime for a login that says remember: false",
)
@click.option(
    "--audit/--no-audit",
    default=True,
    show_default=True,
    help="Keep security events in the store (one durable write per sign-in, sign-out, "
    "refusal or change).",
)
@_duration("--audit-retention", _AUDIT.retention, "days", "How long audit records are kept")
@_duration(
    "--reuse-grace",
    _SESSIONS.reuse_grace,
    "seconds",
    "How long a rotated refresh token still yields the same successor, to the client that "
    "rotated it only (same address and user agent): the accounts-js client refreshes "
    "concurrently. From anywhere else it revokes at once; 0 is strict",
)
@click.option(
    "--service",
    "service_names",
    multiple=True,
    help="Login service to load (default: all installed).",
)
@click.option(
    "--webauthn-rp-id",
    envvar="ACCOUNTS_WEBAUTHN_RP_ID",
    show_envvar=True,
    help="Passkeys: the domain they are bound to, e.g. example.com (default: the host of the "
    "first origin).",
)
@click.option(
    "--webauthn-rp-name",
    envvar="ACCOUNTS_WEBAUTHN_RP_NAME",
    show_envvar=True,
    help="Passkeys: the name browsers show for this site (default: accounts-server).",
)
@click.option(
    "--webauthn-origin",
    "webauthn_origins",
    metavar="ORIGIN",
    multiple=True,
    envvar="ACCOUNTS_WEBAUTHN_ORIGINS",
    show_envvar=True,
    callback=_origins,
    help="Passkeys: an exact origin pages run on, e.g. https://app.example.com; repeat for "
    "several; in the variable, separate them by spaces or commas (default: ACCOUNTS_SITE_URL).",
)
@click.option(
    "--site-url",
    default=DEFAULT_SITE_URL,
    show_default=True,
    help="The front end's address: mailed links and passkey origins point there.",
)
@click.option(
    "--smtp-url",
    help="Send mail through this server: smtp://user:pass@host:587 (STARTTLS when offered) "
    "or smtps://host:465. Give the password by reference in a config file.",
)
@click.option("--mail-from", help="The sender address of mails (needed with --smtp-url).")
@click.option(
    "--mail-templates",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="A directory of mail texts replacing the services' own: <kind>.subject, <kind>.txt, "
    "<kind>.html (kinds: verify, reset, exists, enroll, two_factor_enabled, "
    "two_factor_disabled, magic_link), with $url, $token and $email.",
)
@click.option(
    "--mail",
    "mail_mode",
    type=click.Choice(["smtp", "log", "none"]),
    help="smtp: send (needs --smtp-url); log: write each mail's recipient, subject and links to "
    "the log instead, for development; none: mail routes answer 503. Default: smtp with "
    "--smtp-url, else log.",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    metavar="ORIGIN",
    help="An exact origin (https://app.example.com) whose pages may call the API with "
    "credentials; repeat for several. CORS is off without one.",
)
@click.option(
    "--ui",
    is_flag=True,
    help="Serve hosted pages at /accounts/ui: sign in (with two-factor), register, forgotten "
    "password and the mailed links, and an account page (sessions, password, two-factor, "
    "activity). Mail links then point there unless --site-url says otherwise.",
)
@click.option(
    "--ui-return-to",
    "ui_return_to",
    multiple=True,
    metavar="ORIGIN",
    help="An exact origin the pages may send a user back to after signing in (return_to); "
    "repeat for several. Anything else lands on the account page.",
)
@click.option(
    "--ui-templates",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="A directory of templates replacing the pages' own of the same name (branding).",
)
@click.option(
    "--admin",
    "admins",
    multiple=True,
    metavar="EMAIL|ID",
    help="A user who may administer: a verified email address, or a user id; repeat for "
    "several. (Not a username: anyone may register one that is free.)",
)
@click.option(
    "--admin-role",
    help="Users whose extra.roles holds this role may administer (extra is written only by "
    "admins and server code).",
)
@click.option(
    "--rate-limits/--no-rate-limits",
    default=True,
    show_default=True,
    help="Limit logins, registrations, mails, token submissions and refreshes (DESIGN §10). "
    "Off only behind something that limits them.",
)
@click.option(
    "--trusted-proxy", multiple=True, help="Proxy network whose X-Forwarded-For is believed."
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    envvar="ACCOUNTS_WORKERS",
    help="Processes serving on one database (SQLite or MongoDB): sessions, revocations and "
    "rate counters are the store's, so they hold across all of them.",
)
@click.option(
    "--graceful-timeout",
    default=10,
    show_default=True,
    type=click.IntRange(0, 3600),
    help="Seconds in-flight requests get to finish on SIGTERM before connections are closed.",
)
@click.option("--log-level", default="info", show_default=True)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object a line (time, level, logger, message, and for requests route, "
    "status, request id, user id). Neither format holds a password, token or code.",
)
@click.option(
    "--metrics",
    is_flag=True,
    help="Serve Prometheus metrics at /metrics (summed over --workers): events, error codes, "
    "latency by route.",
)
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    database: Database,
    key_paths: tuple[Path, ...],
    sealing_key_paths: tuple[Path, ...],
    issuer: str,
    audience: str,
    access_lifetime: int,
    session_lifetime: int,
    short_session_lifetime: int,
    audit: bool,
    audit_retention: int,
    reuse_grace: int,
    service_names: tuple[str, ...],
    webauthn_rp_id: str | None,
    webauthn_rp_name: str | None,
    webauthn_origins: tuple[str, ...],
    site_url: str,
    smtp_url: str | None,
    mail_from: str | None,
    mail_templates: Path | None,
    mail_mode: str | None,
    cors_origins: tuple[str, ...],
    ui: bool,
    ui_return_to: tuple[str, ...],
    ui_templates: Path | None,
    admins: tuple[str, ...],
    admin_role: str | None,
    rate_limits: bool,
    trusted_proxy: tuple[str, ...],
    workers: int,
    graceful_timeout: int,
    log_level: str,
    log_format: str,
    metrics: bool,
) -> None:
    """Run the server under uvicorn (uvloop and httptools when installed)."""
    import uvicorn

    from .http.app import cors_settings

    try:
        db_path = database.db_path
        db_path.parent.mkdir(parents=True, exist_ok=True)
        _export_service_settings(
            {
                "ACCOUNTS_WEBAUTHN_RP_ID": webauthn_rp_id,
                "ACCOUNTS_WEBAUTHN_RP_NAME": webauthn_rp_name,
                "ACCOUNTS_WEBAUTHN_ORIGINS": " ".join(webauthn_origins) or None,
            }
        )
        mail = mail_mode or ("smtp" if smtp_url else "log")
        if ui and ctx.get_parameter_source("site_url") == click.core.ParameterSource.DEFAULT:
            site_url = (
                f"http://{'localhost' if host in ('127.0.0.1', '::1') else host}:{port}/accounts/ui"
            )
        if mail == "smtp" and not (smtp_url and mail_from):
            raise ConfigurationError("--mail smtp needs --smtp-url and --mail-from")
        serving = _Serving(
            db_path=str(db_path),
            mongodb_url=database.mongodb_url,
            mongodb_db=database.mongodb_db,
            postgres_url=database.postgres_url,
            key_paths=tuple(map(str, key_paths)),
            sealing_key_paths=tuple(map(str, sealing_key_paths)),
            issuer=issuer,
            audience=audience,
            access_lifetime=access_lifetime,
            session_lifetime=session_lifetime,
            short_session_lifetime=short_session_lifetime,
            audit=audit,
            audit_retention=audit_retention,
            reuse_grace=reuse_grace,
            service_names=service_names,
            services=service_tables(ctx, installed_services()),
            site_url=site_url,
            smtp_url=smtp_url,
            mail_from=mail_from,
            mail_templates=str(mail_templates) if mail_templates else None,
            mail=mail,
            cors_origins=cors_origins,
            ui=ui,
            ui_return_to=ui_return_to,
            ui_templates=str(ui_templates) if ui_templates else None,
            admins=admins,
            admin_role=admin_role,
            rate_limits=rate_limits,
            trusted_proxy=trusted_proxy,
            metrics=metrics,
        )
        serving.ui_config()
        services = serving.login_services()  # a bad setting fails before any key is made
        cors_settings(cors_origins)
        if not key_paths:
            key_path = db_path.with_name("accounts.key")
            load_or_create_key(key_path)
            serving = replace(serving, key_paths=(str(key_path),))
        if not sealing_key_paths:
            default = db_path.with_name(SEALING_KEY_FILE)
            load_or_create_sealing_keys((), default)
            serving = replace(serving, sealing_key_paths=(str(default),))
        server = serving.server(services)
    except ConfigurationError as exc:
        raise click.ClickException(exc.message) from exc
    where = database.describe()
    announce = _announcer(log_format)
    announce(
        f"accounts-server on http://{host}:{port}/accounts  ({where}, "
        f"services: {', '.join(server.services) or 'none'}"
        + (f", {workers} workers)" if workers > 1 else ")"),
    )
    if mail == "log":
        announce(
            "mail is logged, not sent (no --smtp-url): each mail's links are written to the log, "
            "and they are live credentials; set --smtp-url in production",
        )
    elif mail == "none":
        announce("mail is off (--mail none): the routes that send mail answer 503")
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_config": _log_config(log_level, log_format),
        # Ours instead (access_log=True on the app): uvicorn's has the raw path and query,
        # where an OAuth callback carries its code.
        "access_log": False,
        "log_level": log_level,
        # Our app reads X-Forwarded-For itself, and only from --trusted-proxy.
        "proxy_headers": False,
        "server_header": False,
        "timeout_graceful_shutdown": graceful_timeout,
        # No route speaks WebSocket; "auto" would import a websockets library (~15 MiB).
        "ws": "none",
    }
    if workers == 1:
        _run_until_stopped(uvicorn.Config(serving.app(server), **options))
        return
    # Workers build their own server from the same checked settings; the schema is brought
    # up to date once, here, so they never migrate concurrently.
    asyncio.run(_setup_then_close(server))
    os.environ[_WORKER_SETTINGS] = json.dumps(asdict(serving))
    with contextlib.ExitStack() as cleanup:
        if metrics:  # every worker counts into files here; a scrape of any one sums them all
            from .http.metrics import MULTIPROCESS_ENV

            shared = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="accounts-metrics-"))
            os.environ[MULTIPROCESS_ENV] = shared
        config = uvicorn.Config(f"{__name__}:worker_app", factory=True, workers=workers, **options)
        _run_workers(config)


@main.group()
def config() -> None:
    """The settings `serve` runs with."""


def _show(**values: Any) -> None:
    """Every setting of `serve`, given as `serve` takes them (options, ACCOUNTS_* variables,
    --config FILE), with its effective value and where it came from; secrets redacted."""
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for header in ("setting", "value", "from"):
        table.add_column(header, overflow="fold")  # folded, never cut: a value must read whole
    for row in describe(click.get_current_context(), values, installed_services()):
        table.add_row(row.key, row.value, row.source)
    Console().print(table)


config.add_command(
    click.Command(
        "show",
        params=list(serve.params),
        callback=_show,
        help=_show.__doc__,
        short_help="Print the effective settings of `serve` and where each came from.",
    )
)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Serving:
    """What `serve` builds its server from, once checked by the parent process; with
    `--workers`, each worker builds its own from the same values (JSON in the environment)."""

    db_path: str
    mongodb_url: str | None
    mongodb_db: str
    postgres_url: str | None
    key_paths: tuple[str, ...]
    sealing_key_paths: tuple[str, ...]
    issuer: str
    audience: str
    access_lifetime: int
    session_lifetime: int
    short_session_lifetime: int
    audit: bool
    audit_retention: int
    reuse_grace: int
    service_names: tuple[str, ...]
    #: Each installed service's settings (file table, then its variables), by name.
    services: Mapping[str, Mapping[str, Any]]
    site_url: str
    smtp_url: str | None
    mail_from: str | None
    mail_templates: str | None
    #: smtp, log or none, as `--mail` resolved it.
    mail: str
    cors_origins: tuple[str, ...]
    ui: bool
    ui_return_to: tuple[str, ...]
    ui_templates: str | None
    #: Verified email addresses or user ids of admins; and a role in `extra.roles`.
    admins: tuple[str, ...]
    admin_role: str | None
    rate_limits: bool
    trusted_proxy: tuple[str, ...]
    metrics: bool

    def authorize_admin(self, user: User, action: str) -> bool:
        """Whether `user` may administer: one of `admins` by id or by a verified address
        (canonical forms compared), or holding `admin_role`. Nobody, by default."""
        named = {canonical_email(a) if "@" in a else a for a in self.admins}
        if user.id in named or any(
            e.verified and canonical_email(e.address) in named for e in user.emails
        ):
            return True
        roles = user.extra.get("roles")
        return self.admin_role is not None and isinstance(roles, list) and self.admin_role in roles

    def mailer(self) -> Mailer | None:
        """Raises:
        ConfigurationError: a bad SMTP URL.
        """
        if self.mail == "smtp" and self.smtp_url:
            return SMTPMailer.from_url(self.smtp_url, sender=self.mail_from or "")
        return LogMailer() if self.mail == "log" else None

    def login_services(self) -> list[LoginService]:
        """Raises:
        ConfigurationError: as `load_services`.
        """
        return load_services(
            self.service_names,
            tables=self.services,
            mailer=self.mailer(),
            site_url=self.site_url,
            mail_templates=Path(self.mail_templates) if self.mail_templates else None,
        )

    def server(self, services: Sequence[LoginService]) -> AccountsServer:
        """Raises:
        ConfigurationError.
        """
        server = AccountsServer(
            store=Database(
                Path(self.db_path), self.mongodb_url, self.mongodb_db, self.postgres_url
            ).open(),
            tokens=TokenConfig(
                keys=KeyRing([SigningKey.from_file(path) for path in self.key_paths]),
                issuer=self.issuer,
                audience=self.audience,
                access_lifetime=timedelta(minutes=self.access_lifetime),
            ),
            sessions=SessionConfig(
                lifetime=timedelta(days=self.session_lifetime),
                short_lifetime=timedelta(hours=self.short_session_lifetime),
                reuse_grace=timedelta(seconds=self.reuse_grace),
            ),
            audit=AuditConfig(enabled=self.audit, retention=timedelta(days=self.audit_retention)),
            authorize_admin=self.authorize_admin if self.admins or self.admin_role else None,
            rate_limits=RateLimits(enabled=self.rate_limits),
            services=services,
            sealing=load_or_create_sealing_keys(
                [Path(path) for path in self.sealing_key_paths], Path(self.sealing_key_paths[0])
            ),
        )
        server.on("admin_action", log_admin_action)
        return server

    def ui_config(self) -> UIConfig | None:
        """Raises:
        ConfigurationError: a bad --ui-return-to origin.
        """
        from .http.ui import UIConfig

        if not self.ui:
            return None
        templates = Path(self.ui_templates) if self.ui_templates else None
        return UIConfig(return_to_origins=self.ui_return_to, templates=templates)

    def app(self, server: AccountsServer) -> Any:
        from .http import create_app

        return create_app(
            server,
            trusted_proxies=self.trusted_proxy,
            cors_origins=self.cors_origins,
            access_log=True,
            metrics=self.metrics,
            ui=self.ui_config() or False,
            close_store_on_shutdown=True,
            prune_every=timedelta(hours=1),
        )


_WORKER_SETTINGS = "_ACCOUNTS_SERVE_WORKER"


def worker_app() -> Any:
    """The app of one `serve --workers` process (uvicorn imports this by name in each)."""
    values: dict[str, Any] = json.loads(os.environ[_WORKER_SETTINGS])
    typed: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    serving = _Serving(**typed)
    return serving.app(serving.server(serving.login_services()))


async def _setup_then_close(server: AccountsServer) -> None:
    try:
        await server.store.setup()
    finally:
        await server.close()


def _run_workers(config: Any) -> None:
    """uvicorn's supervisor: N processes accept on one socket, each restarted if it dies;
    SIGTERM or Ctrl-C stops them gracefully and the parent exits 0."""
    from uvicorn.supervisors import Multiprocess

    Multiprocess(config, sockets=[config.bind_socket()]).run()


def _announcer(log_format: str) -> Callable[[str], None]:
    """How `serve` says what it runs, whatever the log level: a line on stderr, in the log's
    format (so a JSON log stays all JSON)."""
    if log_format == "text":
        return lambda message: click.echo(message, err=True)
    formatter = JSONFormatter()

    def announce(message: str) -> None:
        record = logging.LogRecord("accounts_server.serve", logging.INFO, "", 0, message, (), None)
        click.echo(formatter.format(record), err=True)

    return announce


def _log_config(level: str, log_format: str = "text") -> dict[str, Any]:
    """uvicorn's logging, extended to our loggers (one line per event, uvicorn's format, or
    JSON) and PyMongo's (warnings only: its debug output is a topology dump per event)."""
    import uvicorn.config

    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    if log_format == "json":
        json_format = {"()": "accounts_server.logs.JSONFormatter"}
        config["formatters"] = {"default": json_format, "access": json_format}
        config["root"] = {"handlers": ["default"], "level": "WARNING"}
    config["loggers"]["accounts_server"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    config["loggers"]["accounts_server.audit"] = {"level": "INFO"}
    config["loggers"]["pymongo"] = {"handlers": ["default"], "level": "WARNING", "propagate": False}
    return config


def _run_until_stopped(config: Any) -> None:
    """uvicorn, except that a graceful stop exits 0. uvicorn re-raises SIGTERM/SIGINT after
    shutting down, so the process ends "killed by signal 15" although it stopped cleanly, and
    an orchestrator reads that as a crash. A second Ctrl-C still forces the exit."""
    import uvicorn

    class GracefulServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True

    GracefulServer(config).run()


def _run(
    database: Database,
    work: Callable[[AccountsServer], Awaitable[_T]],
    *,
    create: bool = False,
) -> _T:
    """Run `work` against a server on the same database as `serve` (management needs no
    signing key: a throwaway one is used and never signs anything); with `create`, a SQLite
    file that is not there yet is created."""
    if database.is_sqlite and not database.db_path.exists() and not create:
        raise click.ClickException(
            f"no database at {database.db_path} (start `serve` once, or --db)"
        )

    async def go() -> _T:
        server = AccountsServer(
            store=database.open(),
            tokens=TokenConfig(keys=KeyRing([SigningKey.generate()])),
            services=load_services(()),
        )
        server.on("admin_action", log_admin_action)
        try:
            return await work(server)
        finally:
            await server.close()

    try:
        return asyncio.run(go())
    except AccountsError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from exc


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _users_table(users: Sequence[User]) -> Table:
    from rich.table import Table  # rich only for the commands that print (~6 MiB)

    table = Table("id", "username", "emails", "status", "created (UTC)")
    for user in users:
        emails = ", ".join(
            f"{e.address}{'' if e.verified else ' (unverified)'}" for e in user.emails
        )
        status = "deactivated" if user.deactivated else "active"
        table.add_row(user.id, user.username or "", emails, status, _when(user.created_at))
    return table


def _secret_service(server: AccountsServer, name: str | None) -> SecretService:
    """Raises:
    ConfigurationError: no such service, or none (or several, and no `name`) taking secrets.
    """
    found = [s for s in server.services.values() if isinstance(s, SecretService)]
    if name is not None:
        found = [s for s in found if s.name == name]
    if len(found) != 1:
        installed = ", ".join(s.name for s in found) or "none"
        raise ConfigurationError(
            f"give --service: one login service that takes a password is needed ({installed})"
        )
    return found[0]


def _console(server: AccountsServer) -> Admin:
    """Administration as the operator at this console, audited as `console:<login>`."""
    try:
        login = getpass.getuser()
    except (KeyError, OSError):
        login = str(os.getuid())
    return server.console_admin(f"console:{login}")


async def _find(server: AccountsServer, who: str) -> User:
    """A user by id, username or email."""
    user = (
        await server.find_user_by_id(who)
        or await server.find_user_by_username(who)
        or (await server.find_user_by_email(who) if "@" in who else None)
    )
    if user is None:
        raise UserNotFound(f"no user {who!r}")
    return user


@main.command()
@store_options
def prune(database: Database) -> None:
    """Delete expired sessions, tokens and counters (the running server also does this hourly)."""
    _prune(database)


def _prune(database: Database) -> None:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), console=Console(stderr=True)
    ) as bar:
        bar.add_task("pruning expired sessions, tokens and counters", total=None)
        count = _run(database, lambda server: server.prune_expired())
    click.echo(f"pruned {count} expired record(s)")


@main.group()
def users() -> None:
    """Users in the server's database."""


@users.command("create")
@store_options
@click.option("--username")
@click.option("--email")
@click.option(
    "--service",
    "service_name",
    help="The login service the password is for (default: the one installed that takes one).",
)
@click.password_option(help="Prompted for when not given.")
def users_create(
    database: Database,
    username: str | None,
    email: str | None,
    service_name: str | None,
    password: str,
) -> None:
    """Create a user who logs in with a password (needs a service that takes one, such as
    accounts-password)."""

    async def create(server: AccountsServer) -> User:
        service = _secret_service(server, service_name)
        data = await service.secret_data(password)
        return await server.create_user(
            username=username,
            emails=[email] if email else [],
            services={service.name: data},
        )

    user = _run(database, create)
    click.echo(f"created {user.id}")


@users.command("list")
@store_options
@click.option("--search", help="Username or email prefix.")
@click.option("--offset", default=0, type=click.IntRange(0))
@click.option("--limit", default=50, type=click.IntRange(1, 100))
def users_list(
    database: Database,
    search: str | None,
    offset: int,
    limit: int,
) -> None:
    """List users, oldest first."""
    from rich.console import Console

    found = _run(
        database,
        lambda server: server.list_users(search=search, offset=offset, limit=limit),
    )
    Console().print(_users_table(found))


@users.command("show")
@store_options
@click.argument("who")
def users_show(database: Database, who: str) -> None:
    """One user (by id, username or email) and their live sessions."""
    from rich.console import Console

    async def show(server: AccountsServer) -> tuple[User, list[Session]]:
        user = await _find(server, who)
        return user, await server.list_sessions(user.id)

    user, sessions = _run(database, show)
    console = Console()
    console.print(_users_table([user]))
    console.print(_sessions_table(sessions))


def _user_action(name: str, doc: str, action: str) -> None:
    @users.command(name, help=doc)
    @store_options
    @click.argument("who")
    def command(database: Database, who: str) -> None:
        async def act(server: AccountsServer) -> User:
            user = await _find(server, who)
            await getattr(_console(server), action)(user.id)
            return user

        user = _run(database, act)
        click.echo(f"{name}d {user.id}")


_user_action("deactivate", "Deactivate a user; every session ends at once.", "deactivate_user")
_user_action("activate", "Activate a deactivated user.", "activate_user")


@users.command("reset-2fa")
@store_options
@click.argument("who")
def users_reset_2fa(database: Database, who: str) -> None:
    """Remove a user's second factor (TOTP and recovery codes) when they have lost both; they
    sign in with their password alone until they enrol again. Audited."""

    async def reset(server: AccountsServer) -> tuple[User, bool]:
        user = await _find(server, who)
        return user, await _console(server).reset_two_factor(user.id)

    user, removed = _run(database, reset)
    if removed:
        click.echo(f"two-factor removed for {user.id}")
    else:
        click.echo(f"{user.id} had no two-factor; nothing changed")


@users.command("delete")
@store_options
@click.argument("who")
@click.confirmation_option(prompt="Delete this user, their sessions and their data?")
def users_delete(database: Database, who: str) -> None:
    """Delete a user with their sessions, tokens and service data."""

    async def delete(server: AccountsServer) -> User:
        user = await _find(server, who)
        await _console(server).delete_user(user.id)
        return user

    click.echo(f"deleted {_run(database, delete).id}")


def _sessions_table(sessions: Sequence[Session]) -> Table:
    from rich.table import Table

    table = Table("session", "created", "last used", "expires", "ip", "user agent", "impersonator")
    for s in sessions:
        table.add_row(
            s.id,
            _when(s.created_at),
            _when(s.last_used_at),
            _when(s.expires_at),
            s.ip or "",
            (s.user_agent or "")[:40],
            s.impersonator_id or "",
        )
    return table


@main.command()
@store_options
@click.option("--user", "who", help="Only this user's records (id, username or email).")
@click.option(
    "--event",
    "events",
    multiple=True,
    type=click.Choice(AUDITED),
    help="Only these events (repeat for several).",
)
@click.option(
    "--since", type=click.DateTime(), help="Only records from this UTC time on (2026-12-01)."
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
def audit(
    database: Database,
    who: str | None,
    events: tuple[str, ...],
    since: datetime | None,
    limit: int,
) -> None:
    """The audit log, newest first: sign-ins and refusals, credential and second-factor
    changes, revocations, admin actions (this listing is one too)."""
    from rich.console import Console
    from rich.table import Table

    async def listing(server: AccountsServer) -> list[AuditRecord]:
        user_id = (await _find(server, who)).id if who else None
        query = audit_query(
            user_id=user_id,
            events=events,
            since=since.replace(tzinfo=UTC) if since else None,
            limit=limit,
        )
        return await _console(server).list_audit(query)

    table = Table("time (UTC)", "event", "user", "by", "service", "code", "ip", "detail")
    for r in _run(database, listing):
        table.add_row(
            _when(r.at), r.event, r.user_id, r.actor_id, r.service, r.code, r.ip, r.detail
        )
    Console().print(table)


@main.group()
def sessions() -> None:
    """Sessions in the server's database."""


@sessions.command("list")
@store_options
@click.argument("who")
def sessions_list(database: Database, who: str) -> None:
    """A user's live sessions."""
    from rich.console import Console

    async def listing(server: AccountsServer) -> list[Session]:
        return await server.list_sessions((await _find(server, who)).id)

    Console().print(_sessions_table(_run(database, listing)))


@sessions.command("revoke")
@store_options
@click.argument("who")
@click.argument("session_id", required=False)
@click.option("--all", "everything", is_flag=True, help="End every session of the user.")
def sessions_revoke(
    database: Database,
    who: str,
    session_id: str | None,
    everything: bool,
) -> None:
    """End one session of a user, or all of them with --all."""
    if bool(session_id) == everything:
        raise click.UsageError("give a SESSION_ID or --all")

    async def revoke(server: AccountsServer) -> int:
        user = await _find(server, who)
        admin = _console(server)
        if everything:
            return await admin.revoke_all_sessions(user.id)
        await admin.revoke_session(user.id, session_id or "")
        return 1

    click.echo(f"revoked {_run(database, revoke)} session(s)")


@sessions.command("prune")
@store_options
def sessions_prune(database: Database) -> None:
    """Delete expired sessions, tokens and counters."""
    _prune(database)


@main.group()
def keys() -> None:
    """Signing keys."""


@keys.command("list")
@click.argument("paths", nargs=-1, type=click.Path(dir_okay=False, exists=True, path_type=Path))
def keys_list(paths: tuple[Path, ...]) -> None:
    """Show the kid and algorithm of key files (default: accounts.key)."""
    from rich.console import Console
    from rich.table import Table

    table = Table("file", "kid", "algorithm")
    for path in paths or (Path("accounts.key"),):
        try:
            key = SigningKey.from_file(path)
        except (OSError, ConfigurationError) as exc:
            raise click.ClickException(f"{path}: {exc}") from exc
        table.add_row(str(path), key.kid, key.algorithm)
    Console().print(table)


@keys.command("rotate")
@click.argument("new_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--current", type=click.Path(dir_okay=False, path_type=Path), default="accounts.key")
@click.option("--algorithm", type=click.Choice(["EdDSA", "ES256"]), default="EdDSA")
def keys_rotate(new_path: Path, current: Path, algorithm: str) -> None:
    """Make a new signing key and say how to serve with it while the current one verifies."""
    try:
        key = _create_key_file(new_path, "ES256" if algorithm == "ES256" else "EdDSA")
    except FileExistsError:
        raise click.ClickException(f"{new_path} exists; refusing to overwrite a key") from None
    click.echo(f"new kid {key.kid}")
    click.echo(f"serve with:  accounts-server serve --key {new_path} --key {current}")
    click.echo("drop the old --key once every refresh token it signed has expired")


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


@main.group("import")
def import_group() -> None:
    """Bring users over from another auth server's database."""


@import_group.command("accounts-js")
@store_options
@click.option(
    "--from",
    "source_url",
    required=True,
    envvar="ACCOUNTS_IMPORT_FROM",
    help="MongoDB URL of the accounts-js (@accounts/mongo) database.",
)
@click.option("--from-db", "source_db", required=True, help="Its database name.")
@click.option(
    "--from-collection",
    "source_collection",
    default="users",
    show_default=True,
    help="Its users collection (@accounts/mongo's collectionName).",
)
@click.option("--dry-run", is_flag=True, help="Read and check everything; write nothing.")
@click.option(
    "--drop-two-factor",
    is_flag=True,
    help="Import users who have TOTP in accounts-js without it (skipped otherwise).",
)
def import_accountsjs(
    database: Database,
    source_url: str,
    source_db: str,
    source_collection: str,
    dry_run: bool,
    drop_two_factor: bool,
) -> None:
    """Import the users of an accounts-js database: ids, usernames, emails (with their
    verified flags), bcrypt password hashes (upgraded to argon2id at each user's first login),
    OAuth identities, deactivation, creation times and the app's own fields. Sessions are not
    carried (users log in again). Run it again at any time: users already here are left
    alone, so a run cut short takes up where it stopped. Exit status 1 when any user was
    skipped or conflicts with one here."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from .importing import import_users
    from .stores.accountsjs import AccountsJsSource

    async def work(server: AccountsServer) -> ImportReport:
        source = AccountsJsSource(source_url, source_db, collection=source_collection)
        try:
            total = await source.count()
            with Progress(
                *Progress.get_default_columns()[:1],
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            ) as bar:
                task = bar.add_task("checking" if dry_run else "importing", total=total)
                return await import_users(
                    server.store,
                    source.users(),
                    clock=server.clock,
                    dry_run=dry_run,
                    drop_two_factor=drop_two_factor,
                    advance=lambda: bar.advance(task),
                )
        finally:
            await source.close()

    report = _run(database, work, create=not dry_run)
    _print_import(report)
    if report.skipped or report.conflicts:
        sys.exit(1)


def _print_import(report: ImportReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    would = "would be " if report.dry_run else ""
    summary = Table("", "users", title="dry run: nothing written" if report.dry_run else None)
    summary.add_row(f"{would}imported", str(report.imported))
    summary.add_row("here already (left alone)", str(report.already))
    if report.deactivated_now:
        summary.add_row(f"here already, {would}deactivated now", str(report.deactivated_now))
    summary.add_row("skipped", str(len(report.skipped)))
    summary.add_row("conflicts", str(len(report.conflicts)))
    console.print(summary)
    for title, rows in (("skipped", report.skipped), ("conflicts", report.conflicts)):
        if rows:
            table = Table("accounts-js user id", "why", title=title)
            for user_id, reason in rows:
                table.add_row(user_id, reason)
            console.print(table)
    if not report.changed and not report.dry_run:
        console.print("nothing changed: every importable user is here already")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def _management_commands(group: click.Group) -> Iterator[click.Command]:
    for command in group.commands.values():
        if isinstance(command, click.Group):
            yield from _management_commands(command)
        else:
            names = {p.name for p in command.params}
            if "db_path" in names and "config_path" not in names:  # not serve or config show
                yield command


# Every command that opens the database reads the database settings of the same --config
# file (or ACCOUNTS_CONFIG) as `serve`, so an operator names the database once.
for _command in _management_commands(main):
    config_option(_command, partial=True)
