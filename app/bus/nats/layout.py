"""What the bus keeps on the server: its streams and consumers, their names, created idempotently."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NotFoundError

from app.bus.nats.members import Group
from app.bus.nats.options import NatsOptions

log = logging.getLogger("ticketing.bus")
T = TypeVar("T")

# A NATS subject: dot-separated tokens, none of them empty, a wildcard or containing blanks.
_SUBJECT = re.compile(r"[^\s.*>]+(\.[^\s.*>]+)*")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
# JetStream counts unacked messages per consumer, retries waiting for their delay included.
_MAX_ACK_PENDING = 20_000


def durable_name(subject: str, group: str) -> str:
    """The consumer shared by ``group`` on ``subject``: readable, and unique thanks to the digest."""
    digest = hashlib.blake2s(f"{subject}\0{group}".encode(), digest_size=5).hexdigest()
    return f"{_UNSAFE.sub('_', group)[:48]}__{_UNSAFE.sub('_', subject)[:48]}_{digest}"


def check_subject(subject: str) -> str:
    if not _SUBJECT.fullmatch(subject):
        raise ValueError(f"subject {subject!r} cannot be a NATS subject (no blanks, '*', '>' or empty tokens)")
    return subject


async def patiently(what: str, ask: Callable[[], Awaitable[T]], within: float) -> T:
    """A JetStream request asked again while the server takes too long to answer, for up to ``within`` seconds.

    A cluster that has just started, or is electing a new leader, can leave requests unanswered
    for a few seconds; processes starting together then all ask at once.
    """
    loop = asyncio.get_running_loop()
    deadline, pause = loop.time() + within, 0.1
    while True:
        try:
            return await ask()
        except NatsTimeout as exc:
            if loop.time() + pause > deadline:
                raise
            log.info("[bus] NATS did not answer (%s: %s); asking again", what, exc or "timeout")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)


async def ensure_stream(
    js: JetStreamContext, name: str, subjects: list[str], max_age: float = 0.0, replicas: int = 1
) -> None:
    """``max_age`` seconds of history (0: all of it), which is what a group subscribing late can get.

    ``replicas`` copies on as many servers of a cluster; the consumers inherit it.
    """
    config = api.StreamConfig(
        name=name,
        subjects=subjects,
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        duplicate_window=120.0 if not max_age else min(120.0, max_age),
        max_age=max_age or None,
        num_replicas=replicas,
    )
    try:
        # Idempotent: several processes start at once, and a restart finds the stream there.
        await js.add_stream(config)
    except APIError as exc:
        try:
            info = await js.stream_info(name)
        except NotFoundError:
            raise exc from None
        missing = set(subjects) - set(info.config.subjects or [])
        if missing:
            raise RuntimeError(f"stream {name} exists but does not hold {', '.join(sorted(missing))}: {exc}") from exc
        log.warning("[bus] Stream %s exists with another configuration; using it as it is (%s)", name, exc)


async def consumer_exists(js: JetStreamContext, stream: str, name: str) -> bool:
    try:
        await js.consumer_info(stream, name)
    except NotFoundError:
        return False
    return True


async def ensure_consumer(js: JetStreamContext, stream: str, name: str, filter_subject: str, ack_wait: float) -> None:
    config = api.ConsumerConfig(
        name=name,
        durable_name=name,
        deliver_policy=api.DeliverPolicy.ALL,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        # Unbounded: the bus dead-letters past policy.max_deliver; the server must never drop.
        max_deliver=-1,
        # One filter per consumer: nats-server 2.9 knows no filter_subjects.
        filter_subject=filter_subject,
        max_ack_pending=_MAX_ACK_PENDING,
    )
    try:
        await js.add_consumer(stream, config)
    except APIError as exc:
        try:
            info = await js.consumer_info(stream, name)
        except NotFoundError:
            raise exc from None
        if info.config.filter_subject != filter_subject:
            raise RuntimeError(f"consumer {name} exists on another subject: {exc}") from exc
        log.warning("[bus] Consumer %s exists with another configuration; using it as it is (%s)", name, exc)


async def expired_so_far(js: JetStreamContext, stream: str) -> int:
    """How many messages ``max_age`` has already removed from the head of ``stream``."""
    info = await js.stream_info(stream)
    first = info.state.first_seq or 1
    return max(0, first - 1)


async def ensure_streams(js: JetStreamContext, options: NatsOptions) -> None:
    """The stream of events and replays, and the one of dead letters, made if missing."""
    events = [options.events(">"), options.replays(">")]
    await patiently(
        "the stream",
        lambda: ensure_stream(js, options.stream, events, options.max_age, options.replicas),
        options.connect_timeout,
    )
    await patiently(
        "the dead-letter stream",
        lambda: ensure_stream(js, options.dead_stream, [options.dead(">")], replicas=options.replicas),
        options.connect_timeout,
    )


async def ensure_consumers(js: JetStreamContext, options: NatsOptions, joining: Group) -> None:
    """A group's two consumers, made if missing: one on the subject's events, one on its replays."""
    subject, group, durable, replay = joining.subject, joining.name, joining.durable, joining.replay_durable
    # Only a bounded history can have lost something before a new group arrived: ask only then.
    new = bool(options.max_age) and not await consumer_exists(js, options.stream, durable)
    events, replays = options.events(subject), options.replays(durable)
    await patiently(
        f"the consumer of {group}",
        lambda: ensure_consumer(js, options.stream, durable, events, options.ack_wait),
        options.connect_timeout,
    )
    if new and (expired := await expired_so_far(js, options.stream)):
        # A new group starts from what the stream still holds; say so when that is not
        # everything, or the gap in its replica goes unnoticed.
        log.warning(
            "[bus] Group %s is new on %s, and stream %s keeps %gs of history: older events "
            "(%d expired from the stream so far) will not be delivered to it",
            group,
            subject,
            options.stream,
            options.max_age,
            expired,
        )
    await patiently(
        f"the replay consumer of {group}",
        lambda: ensure_consumer(js, options.stream, replay, replays, options.ack_wait),
        options.connect_timeout,
    )
