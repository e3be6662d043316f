"""Template helpers for mcpgate's own pages."""

from __future__ import annotations

from django import template

from oauth_ext.models import Client

register = template.Library()


@register.simple_tag
def disabled_client(client_id: object) -> Client | None:
    """The client named by an authorization request, if an operator disabled it.

    DOT treats an unusable client like an unknown one (``invalid_client_id``); the consent
    page uses this to tell the person plainly that the application was switched off here.
    """
    if not isinstance(client_id, str) or not client_id or "\x00" in client_id:
        # No client_id holds a NUL, and PostgreSQL cannot even compare a string with one.
        return None
    return Client.objects.filter(client_id=client_id, disabled=True).first()
