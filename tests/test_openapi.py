"""``/schema/openapi.json`` against SPEC.md's HTTP API table, route by route.

The table is read from SPEC.md's own text (``tests/spec_excerpt.md``, which
``tests/test_spec_excerpt.py`` holds to SPEC.md), so a status, a field or a route that SPEC names
and the document lacks fails here. Statuses the document has beyond SPEC's row must each be
explained by a rule below.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from app.main import create_app
from tests.deployments import make_settings

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "tests" / "spec_excerpt.md"
_ROW = re.compile(r"^\|\s*(GET|POST|PUT|DELETE) (/\S*)(?: `(\{[^`]*\})`)?\s*\|([^|]*)\|([^|]*)\|([^|]*)\|$")
# A status opens an item of a column: "201 ticket", "…, 409 email in use", "…, else 503".
_STATUS = re.compile(r"(?:^|,\s*|else\s+)([1-5]\d\d)\b")
_SHAPE = re.compile(r"A ticket is `(\{.*?\})`; an order is `(\{.*?\})`")
_BODY_ERRORS = {413, 415}
# Documented operations SPEC's table has no row for, and why.
_BEYOND_THE_TABLE = {("HEAD", "/health"): "uptime monitors ask with HEAD: GET's statuses, no body"}


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    body: tuple[str, ...]
    auth: str
    success: tuple[int, ...]
    errors: tuple[int, ...]
    returns: str

    @property
    def key(self) -> tuple[str, str]:
        return self.method, _shape(self.path)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _shape(path: str) -> str:
    """A path with its parameters unnamed: SPEC writes ``{id}``, the document ``{ticket_id}``."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def _names(braces: str) -> tuple[str, ...]:
    """The top-level field names of SPEC's ``{a, b: {c}, d?}``."""
    inner = braces.strip()[1:-1]
    while re.search(r"\{[^{}]*\}", inner):
        inner = re.sub(r"\{[^{}]*\}", "", inner)
    return tuple(re.sub(r"[:?].*", "", part).strip() for part in inner.split(",") if part.strip())


def spec_rows(text: str) -> list[Row]:
    rows = []
    for line in text.splitlines():
        if match := _ROW.match(line.strip()):
            method, path, body, auth, success, errors = match.groups()
            rows.append(
                Row(
                    method=method,
                    path=path,
                    body=_names(body) if body else (),
                    auth=auth.strip(),
                    success=tuple(int(s) for s in _STATUS.findall(success.strip())),
                    errors=tuple(int(s) for s in _STATUS.findall(errors.strip())),
                    returns=success.strip(),
                )
            )
    return rows


def _spec_text() -> str:
    return SPEC.read_text()


def _params() -> list[Any]:
    return [pytest.param(row, id=str(row)) for row in spec_rows(_spec_text())]


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The document exactly as a client gets it: over HTTP from a started app."""
    database = tmp_path_factory.mktemp("openapi") / "ticketing.db"
    app = create_app(make_settings(f"sqlite+aiosqlite:///{database}", "memory://"))
    with TestClient(app) as client:
        response = client.get("/schema/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def operations(document: dict[str, Any]) -> Iterator[tuple[tuple[str, str], dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield (method.upper(), _shape(path)), operation


def operation_for(document: dict[str, Any], row: Row) -> dict[str, Any]:
    found = dict(operations(document))
    assert row.key in found, f"{row} is in SPEC's table but not in the document"
    return found[row.key]


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def json_schema(document: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    return resolve(document, response["content"]["application/json"]["schema"])


def expected_errors(row: Row, operation: dict[str, Any]) -> dict[int, str]:
    """Every error status the route must document, with the reason (SPEC's row, or a rule)."""
    expected = dict.fromkeys(row.errors, "SPEC's table")
    if row.auth in {"yes", "ops"}:
        expected[401] = "an authenticated route"
    if row.body:
        expected.update(dict.fromkeys(_BODY_ERRORS, "a route that reads a body: over 64 KiB, or not JSON"))
    if row.method in {"POST", "PUT", "DELETE"}:
        expected[403] = 'SPEC "The door": a write signed in by the session cookie from another origin'
    if "{" in row.path and row.path.startswith("/api/"):
        expected[400] = "a path id that is not a UUID"
    if any(parameter["name"] in {"limit", "cursor"} for parameter in operation.get("parameters", [])):
        expected[400] = 'SPEC "Lists": a bad limit or cursor'
    return expected


# Statuses a route answers that neither SPEC's row nor a rule above predicts, and why.
_EXTRA = {
    ("DELETE", "/api/orders/{}"): {409: "a completed order cannot be cancelled"},
    # SPEC, "The door.": TICKETING_AUTH_RATE for both, and the failure window for sign-in.
    ("POST", "/api/users/signup"): {429: "too many attempts from one client"},
    ("POST", "/api/users/signin"): {429: "too many attempts, or too many failures for one email"},
}


@pytest.mark.parametrize("row", _params())
def test_every_route_of_the_spec_documents_its_statuses(document: dict[str, Any], row: Row) -> None:
    operation = operation_for(document, row)
    documented = {int(status) for status in operation["responses"]}
    expected = {**expected_errors(row, operation), **_EXTRA.get(row.key, {})}
    missing = (set(row.success) | set(expected)) - documented
    assert not missing, f"{row}: SPEC says it answers {sorted(missing)}, the document does not"
    unexplained = documented - set(row.success) - set(expected)
    assert not unexplained, f"{row}: the document has {sorted(unexplained)}, which SPEC does not explain"


@pytest.mark.parametrize("row", _params())
def test_every_error_answer_is_specs_error_body(document: dict[str, Any], row: Row) -> None:
    operation = operation_for(document, row)
    for status, response in operation["responses"].items():
        if int(status) >= 400 and status not in {"503"}:
            schema = json_schema(document, response)
            assert schema.get("title") == "ErrorBody", f"{row} {status} has another body: {schema}"
            assert response["content"]["application/json"].get("examples"), f"{row} {status} has no example"


def test_the_error_body_is_specs_shape(document: dict[str, Any]) -> None:
    body = document["components"]["schemas"]["ErrorBody"]
    detail = resolve(document, body["properties"]["errors"]["items"])
    assert (body["required"], body["properties"]["errors"]["type"]) == (["errors"], "array")
    assert detail["required"] == ["message"], "field is there only when one input field is at fault"
    assert detail["properties"] == {"message": {"type": "string"}, "field": {"type": "string"}}


@pytest.mark.parametrize("row", _params())
def test_authenticated_routes_name_both_credentials(document: dict[str, Any], row: Row) -> None:
    security = operation_for(document, row).get("security") or []
    schemes = document["components"]["securitySchemes"]
    if row.auth == "yes":
        assert sorted(security, key=str) == [{"bearer": []}, {"sessionCookie": []}]
        assert (schemes["bearer"]["type"], schemes["bearer"]["scheme"]) == ("http", "bearer")
        assert schemes["sessionCookie"] == {
            **schemes["sessionCookie"],
            "type": "apiKey",
            "in": "cookie",
            "name": "session",
        }
    elif row.auth == "ops":
        assert security == [{"opsToken": []}]
    else:
        assert not security or {} in security, f"{row} needs no credentials, yet the document asks for some"


@pytest.mark.parametrize("row", _params())
def test_request_bodies_have_specs_wire_names(document: dict[str, Any], row: Row) -> None:
    operation = operation_for(document, row)
    if not row.body:
        assert "requestBody" not in operation
        return
    schema = resolve(document, operation["requestBody"]["content"]["application/json"]["schema"])
    assert tuple(schema["properties"]) == row.body
    assert sorted(schema["required"]) == sorted(row.body)


def _shapes() -> dict[str, tuple[str, ...]]:
    text = _spec_text()
    match = _SHAPE.search(" ".join(text.split()))
    assert match, "SPEC.md no longer says what a ticket and an order are"
    return {"ticket": _names(match.group(1)), "order": _names(match.group(2))}


@pytest.mark.parametrize("row", _params())
def test_answers_have_specs_wire_names(document: dict[str, Any], row: Row) -> None:
    response = operation_for(document, row)["responses"][str(row.success[0])]
    if row.success[0] in {202, 204} and "{" not in row.returns:
        assert row.success[0] != 204 or "content" not in response, f"{row}: a 204 has no body"
        return
    if inline := re.search(r"`(\{.*\})`", row.returns):
        wanted: tuple[str, ...] | None = _names(inline.group(1))
    else:
        wanted = next((shape for word, shape in _shapes().items() if word in row.returns), None)
    if wanted is None:
        return  # SPEC names no fields for this answer (/health's)
    schema = json_schema(document, response)
    if schema.get("type") == "array":
        schema = resolve(document, schema["items"])
    assert sorted(schema["properties"]) == sorted(wanted), f"{row}"


def test_the_table_is_read_whole() -> None:
    # The parser itself must be able to fail: SPEC's table has sixteen rows, and the rules read.
    text = _spec_text()
    rows = {str(row): row for row in spec_rows(text)}
    assert len(rows) >= 16
    signup = rows["POST /api/users/signup"]
    assert (signup.body, signup.success, signup.errors) == (("email", "password"), (201,), (400, 409))
    assert rows["PUT /api/tickets/{id}"].errors == (400, 404, 403, 409, 412)
    assert rows["GET /health"].success == (200, 503)


def test_every_documented_route_is_in_the_spec(document: dict[str, Any]) -> None:
    text = _spec_text()
    known = {row.key for row in spec_rows(text)} | set(_BEYOND_THE_TABLE)
    assert {key for key, _ in operations(document)} <= known
