"""schemathesis hooks for tests/test_fuzz.py: who calls, and what SPEC says beyond the document.

Loaded by the schemathesis CLI (``hooks`` in tests/schemathesis.toml), in its own process; the
test hands it the callers' credentials through the environment.

- Callers take turns: the owner with a Bearer token, the owner with the session cookie, another
  user, and nobody. Over the stateful phase's chains that means a ticket created by one caller
  is shown, edited and ordered by the others.
- Every 4xx must carry SPEC's error body, exactly.
- Only an order's owner sees or cancels it, only a ticket's owner edits it, and a list of orders
  holds the caller's alone.
"""

from __future__ import annotations

import itertools
import os
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import schemathesis
from schemathesis import AuthContext, Case, CheckContext, Response

from app.common.http import canonical_id

AnyCase = Case[Any]


@dataclass(frozen=True)
class Caller:
    name: str
    user_id: str | None = None
    token: str | None = None
    cookie: bool = False


def _callers() -> list[Caller]:
    env = os.environ
    owner, other = env.get("FUZZ_OWNER_TOKEN"), env.get("FUZZ_OTHER_TOKEN")
    return [
        Caller("owner (Bearer)", env.get("FUZZ_OWNER_ID"), owner),
        Caller("owner (cookie)", env.get("FUZZ_OWNER_ID"), owner, cookie=True),
        Caller("another user", env.get("FUZZ_OTHER_ID"), other),
        Caller("nobody"),
    ]


class _Turns:
    """Whose turn it is, and who made what; the CLI's workers share it."""

    def __init__(self) -> None:
        self._next = itertools.cycle(_callers())
        self._lock = threading.Lock()
        self.caller_of: dict[str, Caller] = {}
        self.creator_of: dict[str, str | None] = {}

    def take(self, case: AnyCase) -> Caller:
        with self._lock:
            caller = next(self._next)
            self.caller_of[case.id] = caller
        return caller


TURNS = _Turns()


@schemathesis.auth(refresh_interval=None, retry_on=[])
class TakingTurns:
    def get(self, case: AnyCase, ctx: AuthContext) -> Caller:
        return TURNS.take(case)

    def set(self, case: AnyCase, data: Caller, ctx: AuthContext) -> None:
        if case.path.startswith("/ops/"):
            # The ops routes take the ops token; nobody's turn sends none.
            if data.token is not None:
                case.headers["Authorization"] = f"Bearer {os.environ['FUZZ_OPS_TOKEN']}"
        elif data.token is not None and data.cookie:
            case.cookies = {**(case.cookies or {}), "session": data.token}
        elif data.token is not None:
            case.headers["Authorization"] = f"Bearer {data.token}"


@schemathesis.hook
def map_case(ctx: schemathesis.HookContext, case: AnyCase) -> AnyCase:
    """A link that finds null where an id belongs (a free ticket's orderId) asks for some unknown id instead.

    schemathesis would otherwise send the text "None", which is no UUID: a 400 for data it
    counts as valid. Any UUID that names nothing is what such a step means: a 404.
    """
    for name, value in (case.path_parameters or {}).items():
        if value is None:
            case.path_parameters[name] = str(uuid.uuid4())
    return case


@schemathesis.hook
def after_call(ctx: schemathesis.HookContext, case: AnyCase, response: Response) -> None:
    caller = TURNS.caller_of.get(case.id)
    if response.status_code == 201 and case.operation.definition.raw.get("operationId") == "createOrder":
        TURNS.creator_of[response.json()["id"]] = caller.user_id if caller else None


def _error_body_problem(body: Any) -> str | None:
    if not isinstance(body, dict) or set(body) != {"errors"}:
        return 'the body is not {"errors": [...]}'
    errors = body["errors"]
    if not isinstance(errors, list) or not errors:
        return "errors is not a non-empty list"
    for error in errors:
        if not isinstance(error, dict) or not isinstance(error.get("message"), str) or not error["message"]:
            return f"{error!r} has no message"
        if set(error) - {"message", "field"} or not isinstance(error.get("field", ""), str):
            return f"{error!r} has more than message and field"
    return None


@schemathesis.check
def spec_error_body(ctx: CheckContext, response: Response, case: AnyCase) -> bool | None:
    """SPEC: every error response has the body {"errors": [{"message": "...", "field": "..."}]}."""
    if not 400 <= response.status_code < 500:
        return None
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(f"{response.status_code} without a JSON body: {response.text[:200]!r}") from None
    if problem := _error_body_problem(body):
        raise AssertionError(f"{response.status_code} is not SPEC's error body: {problem}")
    return True


def _operation_id(case: AnyCase) -> str:
    return str(case.operation.definition.raw.get("operationId"))


@schemathesis.check
def owners_only(ctx: CheckContext, response: Response, case: AnyCase) -> bool | None:
    """SPEC: 403 for another user's order or ticket; GET /api/orders lists the caller's orders only."""
    caller = TURNS.caller_of.get(case.id)
    if caller is None or not 200 <= response.status_code < 300 or case.method.upper() not in {"GET", "PUT", "DELETE"}:
        return None
    operation = _operation_id(case)
    if operation in {"showOrder", "updateTicket"}:
        owner = response.json()["userId"]
        assert owner == caller.user_id, f"{caller.name} got a 2xx from {operation} on what {owner} owns"
    elif operation == "cancelOrder":
        order_id = canonical_id(str(case.path_parameters.get("order_id")))
        creator = TURNS.creator_of.get(order_id or "", caller.user_id)
        assert creator == caller.user_id, f"{caller.name} cancelled an order of {creator}"
    elif operation == "listOrders":
        strangers = {order["userId"] for order in response.json()} - {caller.user_id}
        assert not strangers, f"{caller.name} was listed orders of {sorted(strangers)}"
    return True
