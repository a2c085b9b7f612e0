"""The NATS JetStream bus: the in-memory bus's semantics, shared by every process that connects.

On the server, for stream ``TICKETING`` (the ``stream`` option; subjects go under its lower-cased name):

- stream ``TICKETING`` keeps events on ``ticketing.events.<subject>`` and replays on
  ``ticketing.replay.<consumer>``, by limits, so that a group that subscribes late gets everything;
- stream ``TICKETING_DEAD`` keeps one message per dead letter, on ``ticketing.dead.<id>``;
- each (subject, group) has a durable pull consumer on the events and one on its replays,
  shared by the group's members in every process: one member handles each message.

A member keeps a pull request open (a batch, topped up once half of it is handled) and handles
what arrives in order, one message at a time. Retries are ours: JetStream's BackOff only spaces
ack timeouts, so a failed delivery is nak'ed with the policy's delay, and the consumer's own
max_deliver stays unbounded so that the server never drops a message: past ``max_deliver`` we
dead-letter it. The attempt number is the server's delivery count.

The parts: ``bus`` (the Bus interface), ``options`` (its settings, from the URL), ``delivery`` (each
member's loop: the delivery rules, and the answer to the server), ``members`` (pulling, buffering,
parking), ``upkeep`` (leases, and what other processes settled), ``dead`` (dead letters and
replays), ``pending`` (what ``/ops/bus`` counts), ``layout`` (streams, consumers and their names)
and ``wire`` (headers, dead-letter records). Only this package imports nats-py.
"""

from app.bus.nats.bus import NatsBus
from app.bus.nats.layout import check_subject, durable_name
from app.bus.nats.options import NatsOptions

__all__ = ["NatsBus", "NatsOptions", "check_subject", "durable_name"]
