"""Grants (consents), tokens, codes and ID tokens in the console: listed by fingerprint, revocable, never shown."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest

from audit.models import AuditEvent, AuditKind
from oauth_ext import services
from oauth_ext.models import Consent

from .common import ReadOnlyAdmin, fingerprint


def _last_tool_call(user_field: str, client_field: str) -> Subquery:
    return Subquery(
        AuditEvent.objects.filter(event=AuditKind.TOOL_CALL, user=OuterRef(user_field), client=OuterRef(client_field))
        .order_by("-created")
        .values("created")[:1]
    )


@admin.register(Consent)
class ConsentAdmin(ReadOnlyAdmin):
    """What each person approved for each client; revoking also ends their tokens for it."""

    list_display = ("user", "client", "scope_list", "created", "updated", "host", "last_tool_call")
    list_filter = ("host", ("client", admin.RelatedOnlyFieldListFilter), ("user", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("user", "client")
    search_fields = ("user__username", "user__email", "client__name", "client__client_id")
    actions = ("revoke",)
    readonly_fields = ("user", "client", "scopes", "host", "created", "updated")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Consent]:
        return super().get_queryset(request).annotate(last_call=_last_tool_call("user", "client"))

    @admin.display(description="scopes")
    def scope_list(self, obj: Consent) -> str:
        return " ".join(obj.scopes)

    @admin.display(description="last /mcp call", ordering="last_call")
    def last_tool_call(self, obj: Consent) -> Any:
        return getattr(obj, "last_call", None) or "—"

    @admin.action(description="Revoke selected grants (consent and the person's tokens for that client)")
    def revoke(self, request: HttpRequest, queryset: QuerySet[Consent]) -> None:
        grants = list(queryset.select_related("user", "client"))
        for consent in grants:
            services.consent_revoke(consent=consent, operator=request.user)
        self.message_user(request, f"Revoked {len(grants)} grant(s).", messages.SUCCESS)


class CredentialAdmin(ReadOnlyAdmin):
    """Read-only lists of issued credentials, revocable, never showing a value.

    Its subclasses are named in OAUTH2_PROVIDER's ``*_ADMIN_CLASS`` settings; DOT's admin module
    registers them for its models (tests/console/test_registration.py checks that it did).
    """

    list_select_related = ("user", "application")
    search_fields = ("user__username", "application__name", "application__client_id")
    list_filter = (("application", admin.RelatedOnlyFieldListFilter),)
    actions: tuple[str, ...] = ("revoke",)
    exclude = ("token", "code", "token_checksum", "code_challenge", "nonce", "claims")

    # Read-only (ReadOnlyAdmin): a raw delete would keep a refresh token alive or lose the reuse tombstone,
    # so the way out is the revoke action.

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        excluded = set(self.exclude or ())
        return [f.name for f in self.model._meta.concrete_fields if f.name not in excluded] + ["fingerprint"]

    @admin.display(description="fingerprint")
    def fingerprint(self, obj: Any) -> str:
        return fingerprint(getattr(obj, "token_checksum", ""))

    @admin.action(description="Revoke selected (takes effect on the next request)")
    def revoke(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        items = list(queryset)
        for item in items:
            services.token_revoke(token=item, operator=request.user)
        self.message_user(request, f"Revoked {len(items)}.", messages.SUCCESS)


class AccessTokenAdmin(CredentialAdmin):
    list_display = ("id", "fingerprint", "user", "application", "scope", "created", "expires")
    date_hierarchy = "created"


class RefreshTokenAdmin(CredentialAdmin):
    list_display = ("id", "fingerprint", "user", "application", "created", "revoked")
    list_filter = ("revoked", ("application", admin.RelatedOnlyFieldListFilter))  # type: ignore[assignment]


class GrantAdmin(CredentialAdmin):
    """Authorization codes not yet exchanged (they live a minute)."""

    list_display = ("id", "user", "application", "redirect_uri", "created", "expires")

    @admin.display(description="fingerprint")
    def fingerprint(self, obj: Any) -> str:
        return "—"  # codes are stored in clear: nothing of them is shown


class IDTokenAdmin(CredentialAdmin):
    list_display = ("jti", "user", "application", "created", "expires")
    actions = ()

    @admin.display(description="fingerprint")
    def fingerprint(self, obj: Any) -> str:
        return "—"
