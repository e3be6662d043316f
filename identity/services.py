"""Who may sign in and who is an operator: the person behind the proxy, made a Django user."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import AnonymousUser
from django.db import transaction
from django.http import HttpRequest

from audit.models import AuditKind
from audit.services import audit_record
from oauth_ext.models import User

from .proxy import ProxyIdentity, SignInRefused, email_domain_allowed

logger = logging.getLogger(__name__)


def is_operator(*, identity: ProxyIdentity) -> bool:
    """Listed in MCPGATE_OPERATOR_EMAILS, or in one of MCPGATE_OPERATOR_GROUPS by oauth2-proxy.

    Operators are superusers: the console is the whole admin (clients, grants, tokens, people,
    the audit trail, the redirect allowlist), so a narrower permission set would only have to
    be kept in step with every model. Who is one is decided here and nowhere else.
    """
    if identity.email.lower() in settings.MCPGATE_OPERATOR_EMAILS:
        return True
    return bool(set(identity.groups) & set(settings.MCPGATE_OPERATOR_GROUPS))


def user_sign_in_from_proxy(*, identity: ProxyIdentity, current: Any, request: HttpRequest) -> User:
    """The user oauth2-proxy vouched for: created on first sign-in, groups kept current.

    Raises SignInRefused for an address outside MCPGATE_EMAIL_DOMAINS or a disabled account;
    the refusal is audited outside the transaction, so raising does not roll the record back.
    """
    if not email_domain_allowed(identity.email):
        audit_record(
            event=AuditKind.SIGN_IN_REFUSED, request=request, user=AnonymousUser(), detail={"email": identity.email}
        )
        raise SignInRefused(f"{identity.email} is not in an email domain allowed here.")
    host = request.mcpgate_host.name  # type: ignore[attr-defined]
    with transaction.atomic():
        if isinstance(current, User) and current.is_authenticated and current.username == identity.email:
            user = current
            new_session = False
        else:
            # No usable password: people sign in through the proxy, never with Django's form.
            defaults = {"email": identity.email, "password": make_password(None)}
            user, created = User.objects.get_or_create(username=identity.email, defaults=defaults)
            if created:
                logger.info("created user for %s on first sign-in", identity.email)
            new_session = True
        if user.is_active:
            changed = []
            if user.proxy_groups != list(identity.groups):
                user.proxy_groups = list(identity.groups)
                changed.append("proxy_groups")
            if user.proxy_subject != identity.subject:
                user.proxy_subject = identity.subject
                changed.append("proxy_subject")
            if new_session and user.last_sign_in_host != host:
                user.last_sign_in_host = host
                changed.append("last_sign_in_host")
            # Operator rights follow the configuration on every proxied request: granted on
            # first sign-in, taken away as soon as the person is no longer listed.
            operator = is_operator(identity=identity)
            if user.is_staff != operator or user.is_superuser != operator:
                user.is_staff = user.is_superuser = operator
                changed += ["is_staff", "is_superuser"]
                audit_record(
                    event=AuditKind.OPERATOR_GRANTED if operator else AuditKind.OPERATOR_REMOVED,
                    request=request,
                    user=user,
                )
            if changed:
                user.save(update_fields=changed)
            if new_session:
                audit_record(
                    event=AuditKind.SIGN_IN, request=request, user=user, detail={"groups": list(identity.groups)}
                )
    if not user.is_active:
        audit_record(
            event=AuditKind.SIGN_IN_REFUSED,
            request=request,
            user=AnonymousUser(),
            detail={"email": identity.email, "reason": "disabled"},
        )
        raise SignInRefused(f"The account {identity.email} is disabled.")
    return user
