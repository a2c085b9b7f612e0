"""``/schema/asyncapi.json``: an AsyncAPI 3.0 document of the events, true to what travels.

It is checked against AsyncAPI's own JSON Schema (``schemas/3.0.0.json`` of the official
``@asyncapi/specs`` npm package, fetched with ``npm pack`` for the run), against SPEC.md's table
of who publishes and who listens, and against the events the app really commits.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
from typing import Any

import jsonschema
import msgspec
import pytest
from referencing import Registry
from referencing.jsonschema import DRAFT7
from sqlalchemy import select

from app.asyncapi import document, nats_subject
from app.bus.outbox import OutboxRecord
from app.common.events import Subjects
from tests.conftest import Api
from tests.test_openapi import SPEC

# The official schemas, pinned: a new release may judge the same document otherwise.
SPECS_NPM = "@asyncapi/specs@6.11.1"
_MODULE_ROW = re.compile(r"^\| (\w+) \|[^|]*\|([^|]*)\|([^|]*)\|$")


@pytest.fixture(scope="session")
def asyncapi_validator(tmp_path_factory: pytest.TempPathFactory) -> jsonschema.Draft7Validator:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip(f"needs npm to fetch AsyncAPI's own JSON Schema ({SPECS_NPM})")
    where = tmp_path_factory.mktemp("asyncapi-specs")
    packed = subprocess.run(
        [npm, "pack", SPECS_NPM, "--silent"], cwd=where, capture_output=True, text=True, timeout=120, check=False
    )
    assert packed.returncode == 0, f"npm pack {SPECS_NPM} failed:\n{packed.stdout}{packed.stderr}"
    with tarfile.open(where / packed.stdout.strip().splitlines()[-1]) as archive:
        bundled = archive.extractfile("package/schemas/3.0.0.json")
        assert bundled is not None
        schema = json.load(bundled)
    # The file bundles every definition it refers to, each under its own $id.
    resources = [(schema["$id"], schema)] + [
        (definition["$id"], definition) for definition in schema["definitions"].values() if "$id" in definition
    ]
    registry = Registry().with_resources((uri, DRAFT7.create_resource(content)) for uri, content in resources)
    return jsonschema.Draft7Validator(schema, registry=registry)


def problems(validator: jsonschema.Draft7Validator, doc: dict[str, Any]) -> list[str]:
    return [f"{list(error.path)}: {error.message}" for error in validator.iter_errors(doc)]


@pytest.mark.parametrize("bus_url", ["memory://", "nats://127.0.0.1:4222?stream=TUTORIAL", "nats://a:1,b:2"])
def test_the_document_is_valid_asyncapi_3(asyncapi_validator: jsonschema.Draft7Validator, bus_url: str) -> None:
    assert problems(asyncapi_validator, document(bus_url)) == []


def test_the_validator_can_fail(asyncapi_validator: jsonschema.Draft7Validator) -> None:
    broken = {**document("memory://"), "channels": {"ticketCreated": {"address": 42}}}
    assert problems(asyncapi_validator, broken)


async def test_it_is_served(api: Api) -> None:
    response = await api.http.get("/schema/asyncapi.json")
    assert response.status_code == 200
    assert response.json() == document(api.runtime.settings.bus.url)


def test_every_subject_has_its_channel_on_the_nats_subject_it_travels_on() -> None:
    doc = document("nats://127.0.0.1:4222?stream=Tutorial")
    addresses = {channel["title"]: channel["address"] for channel in doc["channels"].values()}
    assert addresses == {str(s): f"tutorial.events.{s}" for s in Subjects}
    assert {channel["address"] for channel in document("memory://")["channels"].values()} == {
        f"ticketing.events.{s}" for s in Subjects
    }
    assert doc["servers"]["nats0"]["host"] == "127.0.0.1:4222"


def _spec_modules() -> dict[str, tuple[set[str], set[tuple[str, str]]]]:
    """SPEC's table: module -> (subjects it publishes, (subject, group) it listens to)."""
    modules = {}
    for line in SPEC.read_text().splitlines():
        match = _MODULE_ROW.match(line.strip())
        if match and match.group(1) != "module":
            name, publishes, listens = match.groups()
            group = re.search(r"`([^`]+)`", listens)
            subjects = set(re.findall(r"\w+:\w+", publishes))
            heard = {(subject, group.group(1)) for subject in re.findall(r"\w+:\w+", listens)} if group else set()
            modules[name] = (subjects, heard)
    assert set(modules) >= {"users", "tickets", "orders"}, "SPEC's module table was not read"
    return modules


def _documented() -> dict[str, tuple[set[str], set[tuple[str, str]]]]:
    doc = document("memory://")
    found: dict[str, tuple[set[str], set[tuple[str, str]]]] = {}
    for operation in doc["operations"].values():
        module = operation["tags"][0]["name"]
        subject = doc["channels"][operation["channel"]["$ref"].rsplit("/", 1)[-1]]["title"]
        sends, hears = found.setdefault(module, (set(), set()))
        if operation["action"] == "send":
            sends.add(subject)
        else:
            hears.add((subject, operation["bindings"]["nats"]["queue"]))
    return found


# Beyond SPEC's module table, by its rule that a sign-out is refused "in every process that accepts
# tokens": the users module announces it, and every other module keeps it (app/common/revocation.py).
_SIGN_OUTS = {
    "users": ({"user:signed-out"}, set()),
    "tickets": (set(), {("user:signed-out", "tickets-service")}),
    "orders": (set(), {("user:signed-out", "orders-service")}),
}


def test_who_publishes_and_who_receives_is_as_spec_says() -> None:
    spec = {
        name: (sends | _SIGN_OUTS[name][0], hears | _SIGN_OUTS[name][1])
        for name, (sends, hears) in _spec_modules().items()
        if name in _SIGN_OUTS
    }
    assert _documented() == spec


def _payload_schema(subject: str) -> dict[str, Any]:
    doc = document("memory://")
    message = next(m for m in doc["components"]["messages"].values() if m["name"] == subject)
    return {**message["payload"], "components": doc["components"]}


def _publisher(subject: str) -> str:
    return next(name for name, (sends, _) in _documented().items() if subject in sends)


def test_every_example_is_valid_by_its_own_schema() -> None:
    for message in document("memory://")["components"]["messages"].values():
        [example] = message["examples"]
        jsonschema.validate(example["payload"], _payload_schema(message["name"]))
        jsonschema.validate(example["headers"], {**message["headers"], "components": _schema_root()})


def _schema_root() -> dict[str, Any]:
    components: dict[str, Any] = document("memory://")["components"]
    return components


async def test_what_the_modules_commit_is_what_the_document_says(api: Api) -> None:
    owner = api.auth()
    ticket = await api.create_ticket(owner)
    await api.settled()
    await api.http.put(f"/api/tickets/{ticket['id']}", json={"title": "concert", "price": 25.5}, headers=owner)
    await api.settled()
    order = await api.order(api.auth(), ticket["id"])
    await api.settled()
    await api.http.delete(f"/api/orders/{order['id']}", headers=api.auth(order["userId"]))
    await api.settled()
    assert (await api.http.post("/api/users/signout", headers=owner)).status_code == 204
    await api.settled()
    async with api.sessions("tickets")() as session:
        rows = (await session.scalars(select(OutboxRecord))).all()
    assert {row.subject for row in rows} == {str(s) for s in Subjects}
    for row in rows:
        payload = msgspec.json.decode(row.payload)
        jsonschema.validate(payload, _payload_schema(row.subject))
        assert row.source == _publisher(row.subject)


def test_a_payload_that_breaks_the_contract_is_refused_by_the_schema() -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {"id": "x", "version": 0, "title": "t", "price": "20", "userId": "u"}, _payload_schema("ticket:created")
        )


def test_the_nats_subject_is_the_streams_lower_cased_name() -> None:
    assert nats_subject("order:created", "nats://h:1?stream=MyApp&ack_wait=5") == "myapp.events.order:created"
    assert nats_subject("order:created", "memory://?chaos=3") == "ticketing.events.order:created"
