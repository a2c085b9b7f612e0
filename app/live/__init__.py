"""The live view: ``/demo`` shows the bus at work, event by event, for a class to watch."""

from app.live.routes import close_streams, routes

__all__ = ["close_streams", "routes"]
