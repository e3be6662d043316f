"""Built-in tools."""

from __future__ import annotations

from pydantic import BaseModel

from .context import ToolContext
from .registry import tool


class Identity(BaseModel):
    email: str
    groups: list[str]
    client_name: str
    client_id: str
    scopes: list[str]
    token_expires_at: str
    host: str


@tool(title="Who am I?")
def whoami(ctx: ToolContext) -> Identity:
    """Tell who this connection acts as: your email and groups, the application, its scopes and token expiry."""
    return Identity(
        email=ctx.email,
        groups=sorted(ctx.groups),
        client_name=ctx.client.name or ctx.client.client_id,
        client_id=ctx.client.client_id,
        scopes=sorted(ctx.scopes),
        token_expires_at=ctx.token_expires.isoformat(),
        host=ctx.host.name,
    )
