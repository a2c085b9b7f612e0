"""What the bus keeps on the server: its streams and consumers, their names, created idempotently."""

from __future__ import annotations

import hashlib
import logging
import re

from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NotFoundError

log = logging.getLogger("ticketing.bus")

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
