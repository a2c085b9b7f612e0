"""users: sign-up, sign-in and the session; issues the tokens every module accepts."""

from app.common.module import Module
from app.users.events import PUBLISHES
from app.users.models import Base, revoked_tokens
from app.users.routes import UserController

module = Module(
    name="users", metadata=Base.metadata, routes=[UserController], publishes=PUBLISHES, revoked_tokens=revoked_tokens
)
