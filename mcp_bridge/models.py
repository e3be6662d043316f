"""What /mcp keeps in the database of its own: each access token's count of requests in its rate-limit window."""

from __future__ import annotations

from django.db import models
from oauth2_provider.settings import oauth2_settings


class TokenCalls(models.Model):
    """An access token's /mcp requests in its current fixed window of ``MCPGATE_RATE_LIMIT_MCP``.

    On PostgreSQL the token lookup of every /mcp request counts here in the same statement
    (``mcp_bridge.tokens``): one row per token, reset when a later window starts. The table is
    UNLOGGED (migration 0001): a count is not worth a WAL record and a flush per request, and after
    a crash PostgreSQL empties it, which starts every token's window afresh. On SQLite the counts
    stay in the cache, as every other limit's (``mcpgate.ratelimit``), and this table stays empty.
    """

    # No constraint in the database: a token revoked while its request counts would otherwise fail
    # that request's statement. Django still deletes the row with its token (CASCADE is the ORM's).
    token = models.OneToOneField(
        oauth2_settings.ACCESS_TOKEN_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        db_constraint=False,
        related_name="+",
    )
    # When the window ends, seconds since the epoch (django-ratelimit's window: mcpgate.ratelimit.window).
    window_end = models.BigIntegerField()
    calls = models.IntegerField()

    class Meta:
        verbose_name = "token's /mcp calls in its window"
        verbose_name_plural = "tokens' /mcp calls in their windows"

    def __str__(self) -> str:
        return f"token {self.token_id}: {self.calls} calls in the window ending {self.window_end}"
