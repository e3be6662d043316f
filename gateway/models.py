"""Upstreams (an MCP server mcpgate is a client of) and what workers last saw of each."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models, transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone

from oauth_ext.scopes import add_personal_accounts, add_tool_catalog

from . import hooks

# A name and a prefix: lower-case letters, digits and dashes, 1-31 characters, so that
# ``<prefix>__<tool>`` stays within the [A-Za-z0-9_-]{1,64} that Claude's and OpenAI's tool names allow.
NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,30}$"
name_validator = RegexValidator(
    NAME_PATTERN, "Use 1-31 lower-case letters, digits and dashes, starting with a letter or digit."
)


class Transport(models.TextChoices):
    """How mcpgate reaches the upstream (MCP "Transports")."""

    STREAMABLE_HTTP = "streamable_http", "Streamable HTTP"
    SSE = "sse", "HTTP+SSE (legacy, 2024-11-05)"
    STDIO = "stdio", "stdio (a command mcpgate runs)"


class Credential(models.TextChoices):
    """Whose account the upstream acts as when it is called (issue 12)."""

    SHARED = "shared", "shared: the operator's headers, the same for everyone"
    PERSON_TOKEN = "person_token", "per person: a token each person pastes at /connect/"
    PERSON_OAUTH = "person_oauth", "per person: each person signs in at the upstream's OAuth server at /connect/"

    @property
    def per_person(self) -> bool:
        return self is not Credential.SHARED


class Upstream(models.Model):
    """One MCP server behind mcpgate. Credentials are sealed (gateway.crypto) and never shown again."""

    name = models.CharField(max_length=31, unique=True, validators=[name_validator])
    # Empty: the upstream's names as they are (refused when anything collides).
    prefix = models.CharField(max_length=31, blank=True, validators=[name_validator])
    transport = models.CharField(max_length=16, choices=Transport.choices)
    url = models.URLField(max_length=2000, blank=True)
    command = models.JSONField(default=list, blank=True, help_text="stdio: the program and its arguments.")
    # Names only, to show; the values are in the sealed fields.
    header_names = models.JSONField(default=list, blank=True)
    env_names = models.JSONField(default=list, blank=True)
    sealed_headers = models.TextField(blank=True, editable=False)
    sealed_env = models.TextField(blank=True, editable=False)
    groups = models.JSONField(default=list, blank=True, help_text="oauth2-proxy groups; empty: everyone.")
    scopes = models.JSONField(default=list, blank=True, help_text="Scopes a token needs, besides mcp.")
    timeout_seconds = models.FloatField(default=30.0)
    # A header to send, on each request made for a person, a signed assertion of who that is (gateway.assertions).
    identity_assertion_header = models.CharField(
        max_length=100,
        blank=True,
        help_text="Streamable HTTP: the header that carries a 60-second JWT naming the person each call is for "
        "(verify it against /.well-known/jwks.json). Empty: none is sent.",
    )
    credential = models.CharField(
        max_length=16,
        choices=Credential.choices,
        default=Credential.SHARED,
        help_text="Per person: each call carries the caller's own token as Authorization: Bearer (Streamable HTTP).",
    )
    token_pattern = models.CharField(
        max_length=500,
        blank=True,
        help_text="Per-person token: a regular expression a pasted token must match in full (empty: any token).",
    )
    # Per-person OAuth (gateway.upstream_oauth): mcpgate is the upstream authorization server's client.
    oauth_client_id = models.CharField(max_length=300, blank=True)
    sealed_oauth_client_secret = models.TextField(blank=True, editable=False)  # empty: a public client
    authorization_url = models.URLField(max_length=2000, blank=True)
    token_url = models.URLField(max_length=2000, blank=True)
    # The authorization server's issuer (RFC 8414), when discovered: an authorization response's ``iss``
    # must be it (RFC 9207 §2.4).
    oauth_issuer = models.CharField(max_length=2000, blank=True)
    upstream_scopes = models.JSONField(default=list, blank=True, help_text="Scopes asked of the upstream's server.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["prefix"], condition=~models.Q(prefix=""), name="gateway_upstream_unique_prefix"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def target(self) -> str:
        """Where it is, for people: the URL or the command line (never a credential)."""
        return self.url if self.transport != Transport.STDIO else " ".join(self.command)


class UpstreamStatus(models.Model):
    """Health and the last good catalog of an upstream, as the workers last saw it (shared by replicas).

    Written by each worker at most every few seconds (gateway.runtime), never on the request path.
    The catalog lets a worker that cannot reach the upstream still list its tools (marked stale).
    """

    upstream = models.OneToOneField(Upstream, on_delete=models.CASCADE, primary_key=True, related_name="status")
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    protocol_version = models.CharField(max_length=32, blank=True)
    server_name = models.CharField(max_length=200, blank=True)
    catalog: models.JSONField[Any, Any] = models.JSONField(default=dict, blank=True)
    catalog_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "upstream statuses"

    def __str__(self) -> str:
        return f"status of {self.upstream_id}"

    @property
    def failing(self) -> bool:
        """The last thing that happened was an error."""
        if self.last_error_at is None:
            return False
        return self.last_success_at is None or self.last_error_at >= self.last_success_at


class AssertionKey(models.Model):
    """A key that signs identity assertions (gateway.assertions) from ``activates_at`` until ``retired_at``.

    The private half is sealed (gateway.crypto). The public half is published at /.well-known/jwks.json
    from the key's creation (before it signs, so verifiers have it by then) until a while after it retires.
    """

    kid = models.CharField(max_length=64, unique=True)
    sealed_private_key = models.TextField(editable=False)
    public_jwk: models.JSONField[Any, Any] = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)
    activates_at = models.DateTimeField(default=timezone.now)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-activates_at", "-pk"]

    def __str__(self) -> str:
        return self.kid


class Connection(models.Model):
    """A person's own credential at a per-person upstream (gateway.connections), sealed (gateway.crypto).

    Only the person sets it (at /connect/); operators see that it exists and when it was last used,
    never its value, and can delete it.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="upstream_connections")
    upstream = models.ForeignKey(Upstream, on_delete=models.CASCADE, related_name="connections")
    sealed_credential = models.TextField(editable=False)
    connected_at = models.DateTimeField(default=timezone.now)
    # Written at most once a minute per connection (gateway.connections.USE_RECORDED_EVERY), not on every call.
    last_used_at = models.DateTimeField(null=True, blank=True)
    # Per-person OAuth: when the access token expires (it is refreshed shortly before); None: it does not.
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["upstream__name", "user__email"]
        constraints = [
            models.UniqueConstraint(fields=["user", "upstream"], name="gateway_connection_one_per_person"),
        ]

    def __str__(self) -> str:
        return f"{self.user} at {self.upstream}"


@receiver([post_save, post_delete], sender=Upstream)
def _upstream_changed(**kwargs: Any) -> None:
    """Other workers and replicas notice by polling (gateway.runtime); this one is told at once."""
    transaction.on_commit(hooks.announce)


def _unlocked_by(scope: str) -> list[str]:
    """For the consent page: the upstreams a scope unlocks."""
    upstreams = Upstream.objects.filter(enabled=True).only("name", "scopes")
    return [f"{upstream.name} (all its tools)" for upstream in upstreams if scope in upstream.scopes]


add_tool_catalog(_unlocked_by)


def _personal_account_names() -> list[str]:
    """For the consent page: the enabled upstreams people connect their own accounts at (/connect/)."""
    upstreams = Upstream.objects.filter(enabled=True).exclude(credential=Credential.SHARED)
    return list(upstreams.values_list("name", flat=True))


add_personal_accounts(_personal_account_names)
