"""Picks a bus backend from ``TICKETING_BUS_URL``; a backend's driver is imported only when chosen."""

from __future__ import annotations

from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit, urlunsplit

from app.bus.base import Bus
from app.bus.deadletters import DeadLetters
from app.bus.rules import DeliveryPolicy
from app.settings import SettingsError

T = TypeVar("T")

_POLICY_OPTIONS: dict[str, type] = {"max_deliver": int, "backoff": float, "backoff_max": float, "max_wait": float}
_MEMORY_OPTIONS: dict[str, type] = {"chaos": int, "chaos_delay": float, "chaos_duplicates": float, "retain": int}
_NATS_OPTIONS: dict[str, type] = {"stream": str, "ack_wait": float, "batch": int, "max_age": float, "replicas": int}


def create_bus(url: str, *, dead_letters: DeadLetters | None = None) -> Bus:
    """``memory://``, ``memory://?chaos=SEED`` or ``nats://host:port``, each with delivery options.

    Options common to every backend: ``max_deliver`` (failed deliveries before a message is
    dead-lettered), ``backoff`` and ``backoff_max`` (seconds before the first retry, doubling
    up to the maximum), ``max_wait`` (seconds an early delivery may wait for what comes before
    it, in all, before it is dead-lettered). ``dead_letters`` is where a bus whose broker keeps
    nothing (the in-memory one) keeps its dead letters; NATS keeps its own.

    NATS also takes ``stream`` (the JetStream stream, default TICKETING), ``ack_wait`` (seconds
    before an unanswered delivery goes to another member, default 5), ``batch`` (messages a
    member pulls at a time, default 128), ``max_age`` (seconds of history the stream keeps,
    default 0: all) and ``replicas`` (copies of each stream in a cluster, default 1).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        from app.bus.memory import Chaos, MemoryBus

        options = _options(url, parts.query, {**_POLICY_OPTIONS, **_MEMORY_OPTIONS})
        policy = _build(url, DeliveryPolicy, _take(options, _POLICY_OPTIONS))
        retain = options.pop("retain", 10_000)
        chaos = None
        if "chaos" in options:
            chaos_options = {
                "seed": options["chaos"],
                "max_delay": options.get("chaos_delay", Chaos.max_delay),
                "duplicates": options.get("chaos_duplicates", Chaos.duplicates),
            }
            chaos = _build(url, Chaos, chaos_options)
        elif options:
            raise SettingsError(f"bus URL {url!r}: chaos_delay and chaos_duplicates need chaos=SEED")
        return _build(
            url, MemoryBus, {"policy": policy, "chaos": chaos, "retain": retain, "dead_letters": dead_letters}
        )
    if scheme == "nats":
        options = _options(url, parts.query, {**_POLICY_OPTIONS, **_NATS_OPTIONS})
        policy = _build(url, DeliveryPolicy, _take(options, _POLICY_OPTIONS))
        try:
            from app.bus.nats import NatsBus, NatsOptions
        except ImportError as exc:
            if (exc.name or "").partition(".")[0] != "nats":
                raise
            raise SettingsError(f"bus URL {url!r} needs the NATS client: pip install 'ticketing[nats]'") from None
        server = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        try:
            return NatsBus(NatsOptions.from_url(server, **options), policy)
        except ValueError as exc:
            raise SettingsError(f"bus URL {url!r}: {exc}") from None
    raise SettingsError(f"unsupported bus URL {url!r}: use memory://, memory://?chaos=SEED or nats://host:port")


def _options(url: str, query: str, allowed: dict[str, type]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key, values in parse_qs(query, keep_blank_values=True).items():
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise SettingsError(f"bus URL {url!r}: unknown option {key!r}; known options: {known}")
        try:
            options[key] = allowed[key](values[-1])
        except ValueError:
            kind = allowed[key].__name__
            raise SettingsError(f"bus URL {url!r}: {key}={values[-1]!r} is not a valid {kind}") from None
    return options


def _take(options: dict[str, Any], names: dict[str, type]) -> dict[str, Any]:
    return {key: options.pop(key) for key in list(options) if key in names}


def _build(url: str, cls: type[T], kwargs: dict[str, Any]) -> T:
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise SettingsError(f"bus URL {url!r}: {exc}") from None
