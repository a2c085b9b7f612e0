from __future__ import annotations

import re

import msgspec

from app.common.errors import ErrorDetail

# Deliberately plain: one @, no spaces, a dot in the domain. Real proof of an address is a mail.
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
PASSWORD_LENGTH = (8, 128)


class Credentials(msgspec.Struct):
    email: str
    password: str

    def problems(self) -> list[ErrorDetail]:
        problems = []
        # Judged as it will be stored: lower-casing can lengthen it ("İ" becomes two characters).
        if len(self.normalized_email) > 254 or not _EMAIL.fullmatch(self.normalized_email):
            problems.append(ErrorDetail("email must be a valid email address", "email"))
        low, high = PASSWORD_LENGTH
        if not low <= len(self.password) <= high:
            problems.append(ErrorDetail(f"password must be between {low} and {high} characters", "password"))
        return problems

    @property
    def normalized_email(self) -> str:
        return self.email.strip().lower()


class SignInCredentials(Credentials):
    """Signing in checks the email's shape, but only asks for some password: the hash decides."""

    def problems(self) -> list[ErrorDetail]:
        problems = [problem for problem in super().problems() if problem.field == "email"]
        if not self.password or len(self.password) > PASSWORD_LENGTH[1]:
            problems.append(ErrorDetail("password must be supplied", "password"))
        return problems


class SignedIn(msgspec.Struct):
    id: str
    email: str
    token: str


class UserView(msgspec.Struct):
    id: str
    email: str


class CurrentUserView(msgspec.Struct, rename="camel"):
    current_user: UserView | None
