"""What an end-to-end test seeds when the OAuth flow is not its subject: live access tokens."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from django.utils import timezone
from oauth2_provider.models import get_access_token_model, set_token_value

from oauth_ext.models import Client, User


def live_token(user: User, client: Client, *, resource: str) -> tuple[Any, str]:
    """An access token for ``resource`` (scope ``mcp``, an hour left), stored as /oauth/token stores it: the row
    and the raw value."""
    raw = secrets.token_urlsafe(32)
    row = get_access_token_model()(
        user=user, application=client, scope="mcp", expires=timezone.now() + timedelta(hours=1), resource=[resource]
    )
    set_token_value(row, raw)
    row.save()
    return row, raw
