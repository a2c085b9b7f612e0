"""Strict JSON request bodies: exact decimals, no strings where numbers belong, named fields.

Litestar's default body parsing decodes JSON numbers to floats and then converts loosely
(``"10"`` becomes ``10``). Prices must be stored exactly and must be JSON numbers, so request
bodies are decoded here instead, through a DTO, which keeps them in the OpenAPI schema.
"""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

import msgspec
from litestar.dto import MsgspecDTO
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.plugins import OpenAPISchemaPlugin
from litestar.typing import FieldDefinition

from app.common.errors import BadRequest, ErrorDetail, field_from_msgspec

S = TypeVar("S", bound=msgspec.Struct)

# JSON numbers with a fraction become Decimal straight from their text: no float on the way.
_json = msgspec.json.Decoder(float_hook=Decimal)


@runtime_checkable
class SelfValidating(Protocol):
    def problems(self) -> list[ErrorDetail]:
        """Rule violations the type system cannot express; empty when the value is fine."""


def decode_body(body: bytes, model: type[S]) -> S:
    """Decode and validate ``body`` as ``model``, or raise a 400 naming the field at fault."""
    try:
        raw = _json.decode(body)
    except msgspec.DecodeError:
        raise BadRequest("Request body is not valid JSON") from None
    except RecursionError:
        raise BadRequest("Request body is nested too deeply") from None
    if not isinstance(raw, dict):
        raise BadRequest("Request body must be a JSON object")
    for name in _fields_of(model, msgspec.inspect.StrType):
        value = raw.get(name)
        # PostgreSQL cannot store NUL in text, and no email, password or title needs one.
        if isinstance(value, str) and "\x00" in value:
            raise BadRequest(f"{name} must not contain NUL characters", field=name)
    for name in _fields_of(model, msgspec.inspect.DecimalType):
        if isinstance(raw.get(name), str):
            raise BadRequest(f"{name} must be a number, not a string", field=name)
    try:
        value = msgspec.convert(raw, model, strict=True)
    except msgspec.ValidationError as exc:
        message, field = field_from_msgspec(str(exc))
        raise BadRequest(message, field=field) from None
    if isinstance(value, SelfValidating) and (problems := value.problems()):
        raise BadRequest.many(problems)
    return value


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


class DecimalAsNumber(OpenAPISchemaPlugin):
    """Decimals travel as JSON numbers in this API; say so in the schema."""

    @staticmethod
    def is_plugin_supported_type(value: Any) -> bool:
        return value is Decimal

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        return Schema(type=OpenAPIType.NUMBER)
