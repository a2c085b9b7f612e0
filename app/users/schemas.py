from __future__ import annotations

import re
from typing import Annotated, Self

import msgspec
from litestar.openapi.spec import Example
from litestar.params import KwargDefinition

from app.common.body import BLANK, SOLID
from app.common.errors import ErrorDetail
from app.common.http import Id

# Deliberately plain: one @, no spaces, a dot in the domain. Real proof of an address is a mail.
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
EMAIL_LENGTH = 254
PASSWORD_LENGTH = (8, 128)

# The _EMAIL pattern's parts as the document spells them (see app.common.body.SOLID).
_PART = SOLID.replace("[^", "[^@", 1)
_LAST = SOLID.replace("[^", "[^@.", 1)
# The document states the rules problems() applies (msgspec ignores these annotations): the
# address's shape, surrounding whitespace allowed; its length is judged once lower-cased.
Email = Annotated[
    str,
    KwargDefinition(
        description=f"An email address, at most {EMAIL_LENGTH} characters; stored trimmed and lower-cased",
        max_length=EMAIL_LENGTH,
        pattern=f"^{BLANK}*{_PART}+@{_PART}+\\.{_LAST}+{BLANK}*$",
        examples=[Example(value="ada@example.com")],
    ),
]
NewPassword = Annotated[
    str,
    KwargDefinition(
        description=f"{PASSWORD_LENGTH[0]} to {PASSWORD_LENGTH[1]} characters",
        min_length=PASSWORD_LENGTH[0],
        max_length=PASSWORD_LENGTH[1],
        pattern=r"^[^\x00]*$",
        examples=[Example(value="correct horse")],
    ),
]
Password = Annotated[
    str,
    KwargDefinition(
        description="The password chosen at sign-up",
        min_length=1,
        max_length=PASSWORD_LENGTH[1],
        pattern=r"^[^\x00]*$",
        examples=[Example(value="correct horse")],
    ),
]


def normalize_email(email: str) -> str:
    return email.strip().lower()


def _email_problems(email: str) -> list[ErrorDetail]:
    # Judged as it will be stored: lower-casing can lengthen it ("İ" becomes two characters).
    stored = normalize_email(email)
    if len(stored) > EMAIL_LENGTH or not _EMAIL.fullmatch(stored):
        return [ErrorDetail("email must be a valid email address", "email")]
    return []


class Credentials(msgspec.Struct, frozen=True):
    """Body of POST /api/users/signin.

    The email's shape is checked; the password only for presence: the hash decides.
    """

    email: Email
    password: Password

    def problems(self) -> list[ErrorDetail]:
        problems = _email_problems(self.email)
        if not self.password or len(self.password) > PASSWORD_LENGTH[1]:
            problems.append(ErrorDetail("password must be supplied", "password"))
        return problems

    def normalized(self) -> Self:
        return msgspec.structs.replace(self, email=normalize_email(self.email))


class UserCreate(Credentials, frozen=True):
    """Body of POST /api/users/signup."""

    password: NewPassword

    def problems(self) -> list[ErrorDetail]:
        problems = _email_problems(self.email)
        low, high = PASSWORD_LENGTH
        if not low <= len(self.password) <= high:
            problems.append(ErrorDetail(f"password must be between {low} and {high} characters", "password"))
        return problems


class User(msgspec.Struct):
    id: Id
    email: Annotated[str, msgspec.Meta(examples=["ada@example.com"])]


class SignedIn(msgspec.Struct):
    id: Id
    email: Annotated[str, msgspec.Meta(examples=["ada@example.com"])]
    token: Annotated[str, msgspec.Meta(description="A JWT: send it as `Authorization: Bearer <token>`")]


class CurrentUser(msgspec.Struct, rename="camel"):
    current_user: Annotated[User | None, msgspec.Meta(description="null when the request carries no valid credentials")]
