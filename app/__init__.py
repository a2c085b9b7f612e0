"""ticketing: tickets and orders as modules of one process, talking only through an event bus."""
