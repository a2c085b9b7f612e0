"""Strict JSON request bodies: JSON only, exact decimals, no strings where numbers belong, named fields.

Litestar's default body parsing decodes JSON numbers to floats and then converts loosely
(``"10"`` becomes ``10``). Prices must be stored exactly and must be JSON numbers, so request
bodies are decoded here instead, through a DTO whose OpenAPI schema is the body type itself.
"""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, runtime_checkable

import msgspec
from litestar.datastructures import Headers
from litestar.dto import MsgspecDTO
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.openapi.spec import OpenAPIType, Reference, Schema
from litestar.plugins import OpenAPISchemaPlugin
from litestar.typing import FieldDefinition

from app.common.errors import ApiError, BadRequest, ErrorDetail, field_from_msgspec

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.types import ASGIApp, Receive, Scope, Send

S = TypeVar("S", bound=msgspec.Struct)

# What str.strip() removes, spelled out for the patterns in the OpenAPI document: JSON Schema
# reads ``\s`` as ECMA-262 does, which is another set (it has U+FEFF, not U+001C to U+001F).
_BLANKS = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
#: A character str.strip() removes.
BLANK = f"[{_BLANKS}]"
#: A character that is neither one str.strip() removes nor NUL, which no text here may hold.
SOLID = f"[^{_BLANKS}\\x00]"

# JSON numbers with a fraction become Decimal straight from their text: no float on the way.
_json = msgspec.json.Decoder(float_hook=Decimal)


@runtime_checkable
class SelfValidating(Protocol):
    def problems(self) -> list[ErrorDetail]:
        """Rule violations the type system cannot express; empty when the value is fine. Changes nothing."""


@runtime_checkable
class Normalizing(Protocol):
    def normalized(self) -> Any:
        """The same value in its one stored spelling (trimmed, canonical); asked only once it has no problems."""


def decode_body(body: bytes, model: type[S]) -> S:
    """Decode and validate ``body`` as ``model``, or raise a 400 naming the field at fault."""
    value = _convert(_decode(body), model)
    if isinstance(value, SelfValidating) and (problems := value.problems()):
        raise BadRequest.many(problems)
    if isinstance(value, Normalizing):
        normal: S = value.normalized()
        return normal
    return value


def _decode(body: bytes) -> dict[str, Any]:
    try:
        raw = _json.decode(body)
    except msgspec.DecodeError:
        raise BadRequest("Request body is not valid JSON") from None
    except RecursionError:
        raise BadRequest("Request body is nested too deeply") from None
    if not isinstance(raw, dict):
        raise BadRequest("Request body must be a JSON object")
    return raw


def _convert(raw: dict[str, Any], model: type[S]) -> S:
    for name in _fields_of(model, msgspec.inspect.StrType):
        value = raw.get(name)
        # PostgreSQL cannot store NUL in text, and no email, password or title needs one.
        if isinstance(value, str) and "\x00" in value:
            raise BadRequest(f"{name} must not contain NUL characters", field=name)
    for name in _fields_of(model, msgspec.inspect.DecimalType):
        if isinstance(raw.get(name), str):
            raise BadRequest(f"{name} must be a number, not a string", field=name)
    try:
        return msgspec.convert(raw, model, strict=True)
    except msgspec.ValidationError as exc:
        message, field = field_from_msgspec(str(exc))
        raise BadRequest(message, field=field) from None


@functools.cache
def _fields_of(model: type[msgspec.Struct], kind: type[msgspec.inspect.Type]) -> tuple[str, ...]:
    """The JSON names of ``model``'s fields of type ``kind``."""
    info = msgspec.inspect.type_info(model)
    assert isinstance(info, msgspec.inspect.StructType)
    return tuple(field.encode_name for field in info.fields if isinstance(field.type, kind))


class StrictJSON(MsgspecDTO[S], Generic[S]):
    """``dto=StrictJSON[Model]``: the handler's ``data`` is decoded by :func:`decode_body`."""

    def decode_bytes(self, value: bytes) -> Any:
        return decode_body(value, self.model_type)

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: SchemaCreator
    ) -> Reference | Schema:
        # The body as the client writes it: the model's own schema (its wire names, its
        # constraints), not the transfer model a DTO would describe (Python names, none).
        return schema_creator.for_field_definition(FieldDefinition.from_annotation(cls.model_type))


class DecimalAsNumber(OpenAPISchemaPlugin):
    """Decimals travel as JSON numbers in this API; say so in the schema."""

    @staticmethod
    def is_plugin_supported_type(value: Any) -> bool:
        return value is Decimal

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        return Schema(type=OpenAPIType.NUMBER)


class UnsupportedMediaType(ApiError):
    status_code = 415


JSON_ONLY = "A request body must be JSON: send Content-Type: application/json"


def is_json(content_type: str) -> bool:
    """``application/json``, with a ``charset`` or nothing else after it."""
    media_type, *parameters = (part.strip().lower() for part in content_type.split(";"))
    names = {parameter.partition("=")[0].strip() for parameter in parameters} - {""}
    return media_type == "application/json" and names <= {"charset"}


def _has_body(headers: Headers) -> bool:
    return headers.get("content-length", "0").strip() not in ("", "0") or "transfer-encoding" in headers


class JSONBodiesOnly(ASGIMiddleware):
    """415 for a request whose body is anything but JSON, before any handler reads it.

    Every body this API reads is JSON; refusing the others at the door also means an HTML form
    on another site can never post to it (a form cannot send ``application/json``).
    """

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        headers = Headers.from_scope(scope)
        if _has_body(headers) and not is_json(headers.get("content-type", "")):
            raise UnsupportedMediaType(JSON_ONLY)
        await next_app(scope, receive, send)
