"""Data of the authorization server: people, clients (DOT's Application, swapped), consent, audit."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import models
from oauth2_provider.models import AbstractApplication

from .redirects import allowlist_entry_problem, is_loopback_uri, redirect_uri_problem


class User(AbstractUser):
    """A person. ``username`` is the email oauth2-proxy vouched for (lower-case)."""

    proxy_groups = models.JSONField(
        default=list, blank=True, help_text="Groups as oauth2-proxy last reported them (X-Forwarded-Groups)."
    )
    proxy_subject = models.CharField(max_length=255, blank=True, help_text="X-Forwarded-User at last sign-in.")
    last_sign_in_host = models.CharField(max_length=16, blank=True)

    class Meta(AbstractUser.Meta):  # type: ignore[name-defined]
        swappable = "AUTH_USER_MODEL"


class Client(AbstractApplication):
    """An OAuth client (DOT ``Application``), with how and from where it came and whether it may be used."""

    class AuthMethod(models.TextChoices):
        NONE = "none", "none (public client, PKCE only)"
        SECRET_POST = "client_secret_post", "client_secret_post"
        SECRET_BASIC = "client_secret_basic", "client_secret_basic"

    # Blank until clean() derives it from client_type (RFC 7591 §2 default: client_secret_basic).
    token_endpoint_auth_method = models.CharField(max_length=32, choices=AuthMethod.choices, blank=True)
    software_id = models.CharField(max_length=255, blank=True)
    software_version = models.CharField(max_length=64, blank=True)
    registered_from = models.GenericIPAddressField(null=True, blank=True, help_text="Address that registered it.")
    registered_host = models.CharField(max_length=16, blank=True, help_text="internal or public")
    disabled = models.BooleanField(default=False, help_text="A disabled client can neither authorize nor use tokens.")
    last_used_at = models.DateTimeField(null=True, blank=True, help_text="Last token issued or refreshed.")

    class Meta(AbstractApplication.Meta):
        swappable = "OAUTH2_PROVIDER_APPLICATION_MODEL"
        indexes = [models.Index(fields=["registered_from", "created"])]

    def is_usable(self, request: Any) -> bool:
        """DOT calls this on every client lookup and bearer validation (oauth2_validators)."""
        return not self.disabled

    def clean(self) -> None:
        """DOT's checks, then the redirect URI policy (checklist AS2): loopback, or allowlisted.

        A public client keeps no secret (RFC 6749 §2.1: it cannot keep one confidential; it
        authenticates with "none"). DOT's model gives every new row a generated secret, and
        would store a hash of an empty one, so it is blanked here and left unhashed: every
        way a client is made (registration, CIMD, the console, ``create_client``) cleans it
        first, and an empty secret authenticates nobody, at no hashing cost
        (``MCPGateValidator._check_secret``).
        """
        if self.client_type == self.CLIENT_PUBLIC:
            self.client_secret = ""
            self.hash_client_secret = False
        errors: dict[str, list[ValidationError]] = {}
        try:
            super().clean()
        except ValidationError as exc:
            errors = {k: list(v) for k, v in exc.error_dict.items()} if hasattr(exc, "error_dict") else {}
            if not errors:
                raise
        for uri in self.redirect_uris.split():
            problem = redirect_uri_problem(uri)
            if problem:
                errors.setdefault("redirect_uris", []).append(ValidationError(problem))
        if not self.token_endpoint_auth_method:
            public = self.client_type == self.CLIENT_PUBLIC
            self.token_endpoint_auth_method = self.AuthMethod.NONE if public else self.AuthMethod.SECRET_BASIC
        if self.client_type == self.CLIENT_PUBLIC and self.token_endpoint_auth_method != self.AuthMethod.NONE:
            errors.setdefault("token_endpoint_auth_method", []).append(
                ValidationError("A public client authenticates with 'none'.")
            )
        if self.client_type == self.CLIENT_CONFIDENTIAL and self.token_endpoint_auth_method == self.AuthMethod.NONE:
            errors.setdefault("token_endpoint_auth_method", []).append(
                ValidationError("A confidential client authenticates with a secret.")
            )
        if errors:
            raise ValidationError(errors)

    @property
    def is_loopback_only(self) -> bool:
        uris = self.redirect_uris.split()
        return bool(uris) and all(is_loopback_uri(u) for u in uris)


class RedirectAllowlistEntry(models.Model):
    """An operator-approved non-loopback redirect URI (exact) or URI prefix (ends with ``/``)."""

    class Match(models.TextChoices):
        EXACT = "exact", "exactly this URI"
        PREFIX = "prefix", "any URI starting with this"

    uri = models.CharField(max_length=255, unique=True)
    match = models.CharField(max_length=8, choices=Match.choices, default=Match.EXACT)
    note = models.CharField(max_length=255, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "redirect URI allowlist entry"
        verbose_name_plural = "redirect URI allowlist"
        ordering = ["uri"]

    def __str__(self) -> str:
        return self.uri + ("*" if self.match == self.Match.PREFIX else "")

    def clean(self) -> None:
        """An entry is itself a clean URI (no dot segment, backslash, credentials...); a prefix
        ends with '/' and has no query, so it matches whole path segments of one origin
        (oauth_ext.redirects.allowlist_entry_problem)."""
        problem = allowlist_entry_problem(self.uri, prefix=self.match == self.Match.PREFIX)
        if problem:
            raise ValidationError({"uri": problem})


class Consent(models.Model):
    """What a person approved for a client: a returning client asking no more is not asked again."""

    user = models.ForeignKey("oauth_ext.User", on_delete=models.CASCADE, related_name="consents")
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="consents")
    scopes = models.JSONField(default=list)
    host = models.CharField(max_length=16, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "client"], name="one_consent_per_user_client")]

    def __str__(self) -> str:
        return f"{self.user} → {self.client}: {' '.join(self.scopes)}"

    def covers(self, scopes: list[str]) -> bool:
        return set(scopes) <= set(self.scopes)
