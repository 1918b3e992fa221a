"""Operator configuration of `accounts-server serve`: a TOML file, `ACCOUNTS_*` variables and
the command line, merged by click's own precedence (command line > environment > file >
default), with where each value came from and secrets read by reference.

Every `serve` option has one name, its long flag with dashes as underscores (`--access-lifetime`
is `access_lifetime` in the file and `ACCOUNTS_ACCESS_LIFETIME` in the environment), so no
setting is declared twice. Login services are configured in `[services.<name>]` tables; a flat
setting of one can also come from `ACCOUNTS_<NAME>_<KEY>` (`ACCOUNTS_WEBAUTHN_RP_ID`).

A string anywhere in the file may be a reference instead, `{ env = "NAME" }` or
`{ file = "/run/secrets/name" }`, so a secret never has to be written into the file.

Part of the command line: imports click and tomllib; the core never imports this module.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
from click.core import ParameterSource

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "Setting",
    "config_option",
    "describe",
    "environment_names",
    "service_tables",
    "setting_key",
]

ENV_PREFIX = "ACCOUNTS_"
CONFIG_ENV = "ACCOUNTS_CONFIG"
_SERVICES = "services"
_META_FILE = "accounts_server.config_file"
_META_SERVICES = "accounts_server.service_tables"
#: A key naming one of these is a secret: shown as *** by `config show`.
_SECRET_WORDS = ("secret", "password", "token", "credential")
#: A password given as a connection string's parameter (`?password=`, `password=` in libpq's
#: keyword form), not only in a URL's user:password.
_PASSWORD_PARAMETER = re.compile(r"((?:^|[?&\s])password\s*=\s*)('[^']*'|[^&\s]+)", re.IGNORECASE)
_REDACTED = "***"


def setting_key(param: click.Parameter) -> str:
    """The option's one name in the file (and, upper-cased, in the environment)."""
    flags = [o for o in getattr(param, "opts", ()) if o.startswith("--")]
    name = flags[0][2:] if flags else (param.name or "")
    return name.replace("-", "_")


def environment_names(command: click.Command) -> click.Command:
    """Give every option of `command` that reads no variable yet its `ACCOUNTS_<KEY>` one (an
    option that has one keeps it: `--webauthn-origin` reads `ACCOUNTS_WEBAUTHN_ORIGINS`, the
    name the passkey service's own settings use)."""
    for param in command.params:
        if not isinstance(param, click.Option) or param.name in (None, "config_path"):
            continue
        if not param.envvar:
            param.envvar = ENV_PREFIX + setting_key(param).upper()
        param.show_envvar = True
    return command


def config_option(command: click.Command, *, partial: bool = False) -> click.Command:
    """Add `--config FILE` (or `ACCOUNTS_CONFIG`) to `command`: read first, so the file's
    values become the defaults every other option falls back to. `partial` (a management
    command, which shares only the database settings with `serve`) takes the settings it has
    and leaves the rest of the file to `serve`."""

    def load(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
        if value is None:
            return
        document = _read(value)
        ctx.meta[_META_FILE] = value
        ctx.meta[_META_SERVICES] = _services(document.pop(_SERVICES, {}), value)
        found = _defaults(ctx, command, document, value, partial=partial)
        ctx.default_map = {**(ctx.default_map or {}), **found}

    option = click.Option(
        ["--config", "config_path"],
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        envvar=CONFIG_ENV,
        show_envvar=True,
        is_eager=True,
        expose_value=False,
        callback=load,
        help="TOML file of settings: every option by its name with underscores, login "
        "services in [services.<name>] tables. Command line and ACCOUNTS_* variables win.",
    )
    command.params.insert(0, option)
    return command


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except tomllib.TOMLDecodeError as exc:
        raise click.UsageError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise click.UsageError(f"{path}: cannot be read: {exc.strerror}") from None


def _defaults(
    ctx: click.Context,
    command: click.Command,
    document: Mapping[str, Any],
    path: Path,
    *,
    partial: bool,
) -> dict[str, Any]:
    """The file's settings as click's default map (keyed by parameter name), each checked
    by its option's own type now, so an error names the file and the key."""
    options = {setting_key(p): p for p in command.params if isinstance(p, click.Option)}
    options.pop("config", None)
    found: dict[str, Any] = {}
    for key, raw in document.items():
        param = options.get(key)
        if param is None or param.name is None:
            if partial:
                continue
            raise click.UsageError(_unknown(path, key, options))
        value = resolve(raw, f"{path}: {key}")
        if param.multiple and not isinstance(value, list):
            value = [value]
        try:
            param.type_cast_value(ctx, value)
        except click.BadParameter as exc:
            raise click.UsageError(f"{path}: {key}: {exc.message}") from None
        found[param.name] = value
    return found


def _unknown(path: Path, key: str, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{path}: unknown setting {key!r}{hint}; see `accounts-server serve --help`"


def _services(tables: object, path: Path) -> dict[str, dict[str, Any]]:
    if not isinstance(tables, Mapping) or not all(isinstance(t, Mapping) for t in tables.values()):
        raise click.UsageError(f"{path}: services must be tables, e.g. [services.password]")
    return {name: _resolved(table, f"{path}: services.{name}") for name, table in tables.items()}


def _resolved(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    return {key: resolve(value, f"{where}.{key}") for key, value in table.items()}


def resolve(value: Any, where: str) -> Any:
    """A value with every `{env = ...}` / `{file = ...}` reference replaced by the secret it
    names; a reference to nothing is an error naming the key.

    Raises:
        click.UsageError: a reference that cannot be read.
    """
    if isinstance(value, Mapping):
        if set(value) == {"env"} and isinstance(value["env"], str):
            found = os.environ.get(value["env"])
            if found is None:
                raise click.UsageError(f"{where}: environment variable {value['env']} is not set")
            return found
        if set(value) == {"file"} and isinstance(value["file"], str):
            try:
                return Path(value["file"]).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise click.UsageError(f"{where}: {value['file']}: {exc.strerror}") from None
        return _resolved(value, where)
    if isinstance(value, list):
        return [resolve(item, f"{where}[{i}]") for i, item in enumerate(value)]
    return value


def service_tables(ctx: click.Context, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each service's settings: its file table, then `ACCOUNTS_<NAME>_<KEY>` over it."""
    tables: Mapping[str, Mapping[str, Any]] = ctx.meta.get(_META_SERVICES, {})
    settings: dict[str, dict[str, Any]] = {}
    for name in names:
        merged = dict(tables.get(name, {}))
        prefix = f"{ENV_PREFIX}{name.upper()}_"
        for variable, value in os.environ.items():
            if variable.startswith(prefix):
                merged[variable[len(prefix) :].lower()] = value
        settings[name] = merged
    return settings


@dataclass(frozen=True, slots=True)
class Setting:
    """One line of `config show`."""

    key: str
    value: str
    source: str


def describe(
    ctx: click.Context, values: Mapping[str, Any], services: Sequence[str]
) -> list[Setting]:
    """Every option's effective value and where it came from, then the settings of each of
    `services` (the installed ones) that are set; secrets redacted."""
    assert isinstance(ctx.command, click.Command)
    path = ctx.meta.get(_META_FILE)
    rows = []
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name not in values:
            continue
        key = setting_key(param)
        origin = ctx.get_parameter_source(param.name)
        if origin is ParameterSource.COMMANDLINE:
            source = "command line"
        elif origin is ParameterSource.ENVIRONMENT:
            envvars = [param.envvar] if isinstance(param.envvar, str) else param.envvar or []
            source = next((v for v in envvars if v in os.environ), "environment")
        elif origin is ParameterSource.DEFAULT_MAP:
            source = str(path)
        else:
            source = "default"
        rows.append(Setting(key, _shown(key, values[param.name]), source))
    tables: Mapping[str, Mapping[str, Any]] = ctx.meta.get(_META_SERVICES, {})
    for name, merged in service_tables(ctx, services).items():
        for key, value in _flat(merged):
            variable = f"{ENV_PREFIX}{name.upper()}_{key.upper()}"
            source = variable if variable in os.environ else str(path)
            rows.append(Setting(f"services.{name}.{key}", _shown(key, value), source))
    unknown = sorted(set(tables) - set(services))
    for name in unknown:
        rows.append(Setting(f"services.{name}", "(not installed)", str(path)))
    return rows


def _flat(table: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) for every leaf of nested tables."""
    for key, value in table.items():
        if isinstance(value, Mapping):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _shown(key: str, value: Any) -> str:
    if value is None or value == ():
        return "-"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {_shown(k, v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return ", ".join(_shown(key, v) for v in value)
    if any(word in key.lower() for word in _SECRET_WORDS):
        return _REDACTED
    text = _PASSWORD_PARAMETER.sub(rf"\g<1>{_REDACTED}", str(value))
    if "://" in text:
        parts = urlsplit(text)
        if parts.password is not None:
            host = parts.netloc.rpartition("@")[2]
            user = parts.username or ""
            text = parts._replace(netloc=f"{user}:{_REDACTED}@{host}").geturl()
    return text
