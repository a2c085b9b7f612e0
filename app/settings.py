"""Settings, one dataclass per concern, read from the ``TICKETING_*`` environment variables."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

KNOWN_MODULES = ("users", "tickets", "orders")
Migrate = Literal["auto", "off"]
MIGRATE_MODES: tuple[Migrate, ...] = ("auto", "off")


class SettingsError(ValueError):
    """A setting has a value the app cannot run with."""


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = "sqlite+aiosqlite:///ticketing.db"
    # auto: `ticketing run` brings the schema up to date at start; off: it refuses to start unless it is.
    migrate: Migrate = "auto"


@dataclass(frozen=True)
class BusSettings:
    url: str = "memory://"


@dataclass(frozen=True)
class AuthSettings:
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    # True when the secret was made up at start: tokens will not survive a restart
    # and will not be accepted by another process.
    generated_secret: bool = True
    ops_token: str | None = field(default=None, repr=False)
    # TICKETING_COOKIE_SECURE=1: the session cookie goes only over HTTPS (a TLS proxy in front).
    cookie_secure: bool = False
    # TICKETING_AUTH_RATE: signup/signin attempts one client may make a minute; 0 lifts the limit.
    attempts_per_minute: int = 30


@dataclass(frozen=True)
class TracingSettings:
    """Traces, as the standard OpenTelemetry variables ask: ``OTEL_TRACES_EXPORTER`` (``otlp``,
    ``console``, ``none``), else an ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` means ``otlp``."""

    exporters: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.exporters)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TracingSettings:
        named = env.get("OTEL_TRACES_EXPORTER", "")
        if named.strip():
            exporters = tuple(name.strip().lower() for name in named.split(",") if name.strip())
            unknown = set(exporters) - {"otlp", "console", "none"}
            if unknown:
                raise SettingsError(
                    f"OTEL_TRACES_EXPORTER names {', '.join(sorted(unknown))}; use otlp, console or none"
                )
            return cls(tuple(name for name in exporters if name != "none"))
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        return cls(("otlp",) if endpoint else ())


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    bus: BusSettings = field(default_factory=BusSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    modules: tuple[str, ...] = KNOWN_MODULES
    tracing: TracingSettings = field(default_factory=TracingSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        secret = env.get("TICKETING_JWT_SECRET") or None
        return cls(
            database=DatabaseSettings(
                url=env.get("TICKETING_DATABASE_URL") or DatabaseSettings.url,
                migrate=parse_migrate(env.get("TICKETING_MIGRATE") or DatabaseSettings.migrate),
            ),
            bus=BusSettings(url=env.get("TICKETING_BUS_URL") or BusSettings.url),
            auth=AuthSettings(
                jwt_secret=secret or secrets.token_urlsafe(32),
                generated_secret=secret is None,
                ops_token=env.get("TICKETING_OPS_TOKEN") or None,
                cookie_secure=parse_flag_setting("TICKETING_COOKIE_SECURE", env.get("TICKETING_COOKIE_SECURE", "")),
                attempts_per_minute=parse_auth_rate(env.get("TICKETING_AUTH_RATE", "")),
            ),
            modules=parse_modules(env.get("TICKETING_MODULES") or ",".join(KNOWN_MODULES)),
            tracing=TracingSettings.from_env(env),
        )


def parse_modules(value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))
    unknown = [name for name in names if name not in KNOWN_MODULES]
    if unknown:
        raise SettingsError(
            f"TICKETING_MODULES names unknown module(s) {', '.join(unknown)}; choose from {', '.join(KNOWN_MODULES)}"
        )
    if not names:
        raise SettingsError(f"TICKETING_MODULES is empty; choose from {', '.join(KNOWN_MODULES)}")
    return names


def parse_flag_setting(name: str, value: str) -> bool:
    """``1`` on, ``0`` or unset off; anything else is refused rather than guessed at."""
    if value.strip() not in {"", "0", "1"}:
        raise SettingsError(f"{name} is {value!r}; set 1 (on) or 0 (off)")
    return value.strip() == "1"


def parse_auth_rate(value: str) -> int:
    if not value.strip():
        return AuthSettings.attempts_per_minute
    try:
        rate = int(value)
    except ValueError:
        rate = -1
    if rate < 0:
        raise SettingsError(
            f"TICKETING_AUTH_RATE is {value!r}; set the signup/signin attempts one client may make a minute "
            "(a whole number; 0 lifts the limit)"
        )
    return rate


def parse_migrate(value: str) -> Migrate:
    if value not in MIGRATE_MODES:
        raise SettingsError(
            f"TICKETING_MIGRATE is {value!r}; choose auto (bring the schema up to date at start) "
            "or off (refuse to start unless it is; upgrade with `ticketing db upgrade`)"
        )
    return value
