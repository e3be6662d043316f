"""What a tool knows about the call: the person, the client, the granted scopes and groups."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mcpgate.hosts import Host
    from oauth_ext.models import Client, User


@dataclass(frozen=True)
class ToolContext:
    """Handed to every tool as its first argument. Built once per /mcp request by the authentication."""

    user: User
    client: Client
    scopes: frozenset[str]
    groups: frozenset[str]
    token_expires: datetime
    host: Host
    token_id: int
    client_ip: str | None = None

    @property
    def email(self) -> str:
        return self.user.email or self.user.get_username()
