"""In-process notifications about what the bus does, for counters and the live view.

Observers connect with ``sender=bus`` so that several buses in one process (as in the tests)
do not hear each other.
"""

from blinker import Namespace

_signals = Namespace()

#: A message was handed to the bus: ``send(bus, message=Message)``.
published = _signals.signal("published")
#: A delivery is about to run: ``send(bus, delivery=Delivery)``.
delivery_started = _signals.signal("delivery-started")
#: A delivery ran: ``send(bus, delivery=Delivery, verdict=Verdict)``.
delivery_finished = _signals.signal("delivery-finished")
#: Every group of this process has acknowledged or dead-lettered a message, which a bus that
#: is not durable can now forget: ``send(bus, message_id=str)``.
settled = _signals.signal("settled")
