"""Read-only questions about upstreams for other apps (the consent page, the console) and the /connect/ pages."""

from __future__ import annotations

from oauth_ext.models import User

from .models import Credential, Upstream


def failing_upstreams() -> list[Upstream]:
    """Enabled upstreams whose last recorded event is an error (the console's overview)."""
    upstreams = Upstream.objects.filter(enabled=True).select_related("status")
    return [u for u in upstreams if getattr(u, "status", None) is not None and u.status.failing]


def personal_upstreams(*, user: User) -> list[Upstream]:
    """Enabled upstreams that act as each person's own account and that ``user``'s groups may use."""
    groups = set(user.proxy_groups or [])
    upstreams = Upstream.objects.filter(enabled=True).exclude(credential=Credential.SHARED)
    return [u for u in upstreams if not u.groups or groups & set(u.groups)]


def personal_upstream(*, user: User, name: str) -> Upstream | None:
    """One of ``personal_upstreams``, by name; None for any other name (unknown, shared, or not theirs)."""
    return next((u for u in personal_upstreams(user=user) if u.name == name), None)
