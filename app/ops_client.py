"""``ticketing dead-letters``: the operator's side of ``/ops/dead-letters``, over a running app's HTTP API."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import IO, Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


class OpsError(RuntimeError):
    """The app could not be asked, or would not answer: one sentence says why."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class OpsClient:
    def __init__(self, url: str, token: str | None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def dead_letters(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._call("GET", "/ops/dead-letters").json()
        return found

    def replay(self, dead_letter_id: str) -> list[str] | None:
        """The ids replayed (this one, and those that waited behind it); None when there is no such dead letter."""
        response = self._call("POST", f"/ops/dead-letters/{dead_letter_id}/replay", missing_ok=True)
        if response.status_code == 404:
            return None
        replayed: list[str] = response.json().get("replayed", [dead_letter_id])
        return replayed

    def _call(self, method: str, path: str, *, missing_ok: bool = False) -> httpx.Response:
        try:
            response = self._http.request(method, path)
        except httpx.HTTPError as exc:
            raise OpsError(f"cannot reach the app at {self.url}: {exc}") from None
        if response.status_code == 401:
            raise OpsError(
                f"{self.url} refused the ops token (401): set TICKETING_OPS_TOKEN (or --ops-token) to the app's own"
            )
        if response.status_code == 404 and missing_ok:
            return response
        if response.status_code >= 400:
            raise OpsError(f"{method} {self.url}{path} answered {response.status_code}: {_message(response)}")
        return response


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["errors"][0]["message"])
    except (ValueError, KeyError, IndexError, TypeError):
        return response.text[:200] or response.reason_phrase


def list_dead_letters(client: OpsClient, *, as_json: bool = False, out: IO[str] | None = None) -> int:
    out = out or sys.stdout
    dead = client.dead_letters()
    if as_json:
        json.dump(dead, out, indent=2)
        out.write("\n")
        return 0
    if not dead:
        out.write(f"No dead letters at {client.url}.\n")
        return 0
    out.write(f"{len(dead)} dead letter(s) at {client.url}, oldest first:\n")
    for letter in dead:
        out.write(
            f"{letter['id']}  {letter['subject']} / {letter['group']}  "
            f"{letter['attempts']} attempt(s), {letter['failedAt']}\n    {letter['error']}\n"
        )
    out.write("Replay one with `ticketing dead-letters replay ID`, or all with `--all`.\n")
    return 0


def replay_dead_letters(
    client: OpsClient, dead_letter_id: str | None, *, every: bool = False, out: IO[str] | None = None
) -> int:
    out = out or sys.stdout
    if not every:
        assert dead_letter_id is not None
        replayed = client.replay(dead_letter_id)
        if replayed is None:
            raise OpsError(f"no dead letter {dead_letter_id} at {client.url} (see `ticketing dead-letters`)", 1)
        _said(out, dead_letter_id, replayed)
        return 0
    done: set[str] = set()
    for letter in client.dead_letters():
        if letter["id"] in done:
            continue  # already sent back, with the one it waited behind
        replayed = client.replay(letter["id"])
        if replayed is not None:
            done.update(replayed)
            _said(out, letter["id"], replayed)
    out.write(f"Replayed {len(done)} dead letter(s).\n")
    return 0


def _said(out: IO[str], asked: str, replayed: list[str]) -> None:
    behind = [dead for dead in replayed if dead != asked]
    also = f", and {len(behind)} that waited behind it: {', '.join(behind)}" if behind else ""
    out.write(f"Replayed {asked}{also}\n")


def run(url: str, token: str | None, action: Callable[[OpsClient], int]) -> int:
    client = OpsClient(url, token)
    try:
        return action(client)
    except OpsError as exc:
        sys.stderr.write(f"ERROR: {exc}\n")
        return exc.exit_code
    finally:
        client.close()
