"""Every error response has the body ``{"errors": [{"message": ..., "field": ...}]}``."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Annotated, Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.params import KwargDefinition
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap

log = logging.getLogger("ticketing.http")


class ErrorDetail(msgspec.Struct, omit_defaults=True):
    message: str
    # Left out, never null, when no one field is at fault: the document says so (msgspec ignores this).
    field: Annotated[str | None, KwargDefinition(schema_extra={"one_of": None, "type": "string"})] = None


class ErrorBody(msgspec.Struct):
    errors: list[ErrorDetail]


class ApiError(Exception):
    """An error the client caused or can act on; becomes a response with this status."""

    status_code: int = 400
    #: Headers the answer carries (``Retry-After``, say).
    headers: Mapping[str, str] | None = None

    def __init__(self, message: str, *, field: str | None = None, status_code: int | None = None) -> None:
        super().__init__(message)
        self.details = [ErrorDetail(message, field)]
        if status_code is not None:
            self.status_code = status_code

    @classmethod
    def many(cls, details: Sequence[ErrorDetail], status_code: int = 400) -> ApiError:
        error = cls(details[0].message, field=details[0].field, status_code=status_code)
        error.details = list(details)
        return error


class BadRequest(ApiError):
    status_code = 400


class Unauthorized(ApiError):
    status_code = 401


class Forbidden(ApiError):
    status_code = 403


class NotFound(ApiError):
    status_code = 404


class Conflict(ApiError):
    status_code = 409


class PreconditionFailed(ApiError):
    status_code = 412


class TooManyRequests(ApiError):
    """429, saying in ``Retry-After`` (whole seconds, at least one) when to come back."""

    status_code = 429

    def __init__(self, message: str, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(message.format(seconds=self.retry_after))
        self.headers = {"Retry-After": str(self.retry_after)}


def error_response(status_code: int, details: Sequence[ErrorDetail], **headers: str) -> Response[ErrorBody]:
    return Response(
        ErrorBody(list(details)), status_code=status_code, media_type=MediaType.JSON, headers=headers or None
    )


def _api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[ErrorBody]:
    return error_response(exc.status_code, exc.details, **(exc.headers or {}))


_NO_BODY = "Request body is missing: send a JSON object"
# msgspec says "... - at `$.ticket.id`"; the field is the dotted path without "$.".
_AT_PATH = re.compile(r"\s*-\s*at `\$\.?([^`]*)`$")


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    details: list[ErrorDetail] = []
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        for item in exc.extra:
            if isinstance(item, dict):
                key = item.get("key")
                if key == "data" and item.get("source") == "body":
                    # No body at all: Litestar skips the body decoder and reports the handler's argument.
                    details.append(ErrorDetail(_NO_BODY))
                    continue
                message = str(item.get("message") or exc.detail)
                details.append(ErrorDetail(_readable(str(key), message) if key else message, str(key) if key else None))
    if not details:
        details.append(ErrorDetail(_sentence(exc.detail, exc.status_code)))
    return error_response(exc.status_code, details, **(exc.headers or {}))


# Litestar reports a query parameter of the wrong type in msgspec's words: "Expected `int` >= 1".
_EXPECTED = re.compile(r"Expected `([^`|]+)[^`]*`(?:, got `[^`]+`)?(?: (?P<bound>[<>]=? \S+))?")
_WANTED = {"int": "an integer", "float": "a number", "decimal": "a number", "bool": "true or false", "str": "a string"}


def _readable(name: str, message: str) -> str:
    match = _EXPECTED.fullmatch(message)
    if not match:
        return message
    kind = match.group(1).strip()
    wanted = _WANTED.get(kind, kind)
    bound = f" {match.group('bound')}" if match.group("bound") else ""
    return f"{name} must be {wanted}{bound}"


_SENTENCES = {
    401: "Not authorized",
    404: "Not found",
    405: "Method not allowed",
    413: "Request body is too large",
}


def _sentence(detail: str, status_code: int) -> str:
    # Litestar's own details are the bare reason phrase ("Request Entity Too Large"); say what went wrong.
    if not detail or detail.lower() == HTTPStatus(status_code).phrase.lower():
        return _SENTENCES.get(status_code, detail or "Request failed")
    return detail


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    log.exception("Unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, [ErrorDetail("Something went wrong")])


def field_from_msgspec(message: str) -> tuple[str, str | None]:
    """Split a msgspec validation message into a readable message and the field it names."""
    match = _AT_PATH.search(message)
    field = match.group(1) or None if match else None
    text = _AT_PATH.sub("", message)
    missing = re.fullmatch(r"Object missing required field `([^`]+)`", text)
    if missing:
        name = f"{field}.{missing.group(1)}" if field else missing.group(1)
        return f"{name} is required", name
    expected = re.fullmatch(r"Expected `([^`]+)`, got `([^`]+)`", text)
    if expected and field:
        wanted = {"str": "a string", "decimal": "a number", "int": "an integer", "float": "a number"}
        return f"{field} must be {wanted.get(expected.group(1), expected.group(1))}", field
    unknown = re.fullmatch(r"Object contains unknown field `([^`]+)`", text)
    if unknown:
        name = f"{field}.{unknown.group(1)}" if field else unknown.group(1)
        return f"{name} is not a known field", name
    return (f"{field}: {text}" if field else text), field


exception_handlers: ExceptionHandlersMap = {
    ApiError: _api_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
