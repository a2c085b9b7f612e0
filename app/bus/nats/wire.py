"""How a message travels in JetStream: its payload as the body, the rest as headers."""

from __future__ import annotations

import contextlib
import re
from datetime import datetime

import msgspec
from nats.aio.msg import Msg

from app.bus.messages import DeadLetter, Message

MSG_ID = "Nats-Msg-Id"
EVENT_ID = "Ticketing-Event-Id"
OCCURRED_AT = "Ticketing-Occurred-At"
SOURCE = "Ticketing-Source"

DEAD_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
dead_encoder = msgspec.json.Encoder()
dead_decoder = msgspec.json.Decoder(DeadLetter)


# The W3C trace context headers, as any OpenTelemetry-aware consumer reads them.
TRACE_HEADERS = ("traceparent", "tracestate")


def headers(message: Message) -> dict[str, str]:
    found = {MSG_ID: message.id, OCCURRED_AT: message.occurred_at.isoformat()}
    if message.source:
        found[SOURCE] = message.source
    found.update(message.trace)
    return found


def decode(subject: str, msg: Msg, metadata: Msg.Metadata) -> Message:
    # Whatever a foreign publisher left out is made up, rather than the message refused.
    found = msg.headers or {}
    event_id = found.get(EVENT_ID) or found.get(MSG_ID) or f"{metadata.stream}:{metadata.sequence.stream}"
    occurred_at = metadata.timestamp
    if stamp := found.get(OCCURRED_AT):
        with contextlib.suppress(ValueError):
            occurred_at = datetime.fromisoformat(stamp)
    return Message(
        id=event_id,
        subject=subject,
        data=bytes(msg.data),
        occurred_at=occurred_at,
        source=found.get(SOURCE, ""),
        trace={name: found[name] for name in TRACE_HEADERS if name in found},
    )
