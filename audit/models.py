"""The audit trail: one table, one row per thing that happened, and the kinds of thing."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class AuditKind(models.TextChoices):
    """What happened. ``audit_record`` takes only these: a misspelt kind fails at import, not in the timelines."""

    SIGN_IN = "sign_in", "signed in"
    SIGN_IN_REFUSED = "sign_in_refused", "sign-in refused"
    REGISTER = "register", "client registered"
    REGISTER_REFUSED = "register_refused", "registration refused"
    REGISTRATION_UPDATED = "registration_updated", "client registration updated"
    REGISTRATION_DELETED = "registration_deleted", "client registration deleted"
    CONSENT_SHOWN = "consent_shown", "consent page shown"
    CONSENT_GIVEN = "consent_given", "consent given"
    CONSENT_REFUSED = "consent_refused", "consent refused"
    CONSENT_REMEMBERED = "consent_remembered", "consent remembered"
    AUTHORIZE_ERROR = "authorize_error", "authorize error"
    TOKEN_ISSUED = "token_issued", "token issued"
    TOKEN_REFRESHED = "token_refreshed", "token refreshed"
    TOKEN_ERROR = "token_error", "token request refused"
    TOKEN_REVOKED = "token_revoked", "token revoked"
    REFRESH_REUSE = "refresh_reuse", "refresh token reuse detected"
    CODE_REUSE = "code_reuse", "authorization code reuse detected"
    CLIENT_PURGED = "client_purged", "client purged"
    CLIENT_CREATED = "client_created", "client created by operator"
    CLIENT_SECRET_ROTATED = "client_secret_rotated", "client secret rotated"
    CLIENT_DISABLED = "client_disabled", "client disabled"
    CLIENT_ENABLED = "client_enabled", "client enabled"
    CONSENT_REVOKED = "consent_revoked", "grant revoked"
    OPERATOR_GRANTED = "operator_granted", "operator rights granted"
    OPERATOR_REMOVED = "operator_removed", "operator rights removed"
    TOOL_CALL = "tool_call", "tool called"
    RATE_LIMITED = "rate_limited", "rate limit reached"
    UPSTREAM_ADDED = "upstream_added", "upstream added"
    UPSTREAM_CHANGED = "upstream_changed", "upstream changed"
    UPSTREAM_REMOVED = "upstream_removed", "upstream removed"
    ASSERTION_KEY_ROTATED = "assertion_key_rotated", "identity assertion key rotated"
    UPSTREAM_CONNECTED = "upstream_connected", "upstream account connected"
    UPSTREAM_DISCONNECTED = "upstream_disconnected", "upstream account disconnected"


class AuditEvent(models.Model):
    """One row per thing that happened; written only through ``audit.services.audit_record``."""

    created = models.DateTimeField(default=timezone.now, db_index=True)
    event = models.CharField(max_length=32, choices=AuditKind.choices)
    user = models.ForeignKey("oauth_ext.User", null=True, blank=True, on_delete=models.SET_NULL)
    client = models.ForeignKey("oauth_ext.Client", null=True, blank=True, on_delete=models.SET_NULL)
    # Kept as text too, so the trail still reads after a user or client is deleted.
    email = models.CharField(max_length=255, blank=True)
    client_label = models.CharField(max_length=255, blank=True)
    host = models.CharField(max_length=16, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        # The table and its indexes kept the names they had when this model lived in oauth_ext
        # (migrations oauth_ext 0006 and audit 0001 moved it in state only).
        db_table = "oauth_ext_auditevent"
        ordering = ["-created"]
        indexes = [
            models.Index(fields=["event", "created"], name="oauth_ext_a_event_07392c_idx"),
            models.Index(fields=["client", "created"], name="oauth_ext_a_client__4f66c9_idx"),
            models.Index(fields=["user", "created"], name="oauth_ext_a_user_id_103272_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.created:%Y-%m-%d %H:%M:%S} {self.event} {self.email} {self.client_label}"
