"""Upstreams in the console: added, changed and removed through gateway.services; write-only credentials; health."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString

from gateway.assertions import RETIRED_KEPT
from gateway.connections import DisconnectReason, connection_delete
from gateway.crypto import KeyMissing, SealBroken, unseal
from gateway.hooks import reserved_names
from gateway.models import AssertionKey, Connection, Credential, Transport, Upstream, UpstreamStatus
from gateway.services import (
    Field,
    OAuthSettings,
    Target,
    UpstreamInvalid,
    oauth_settings,
    parse_env,
    parse_header,
    target_from,
    upstream_check_unprefixed,
    upstream_create,
    upstream_remove,
    upstream_update,
)
from oauth_ext.scopes import BASIC_SCOPE, all_scopes

from .common import ReadOnlyAdmin, no_store

# The form field next to which a service refusal is shown (gateway.services.Field); others go above the form.
FIELD_OF_REFUSAL = {
    Field.NAME: "name",
    Field.PREFIX: "tool_prefix",
    Field.URL: "url",
    Field.COMMAND: "command",
    Field.HEADERS: "headers",
    Field.ENV: "env",
    Field.GROUPS: "groups",
    Field.SCOPES: "scopes",
    Field.TIMEOUT: "timeout",
    Field.IDENTITY_ASSERTION: "identity_assertion_header",
    Field.CREDENTIAL: "credential",
    Field.TOKEN_PATTERN: "token_pattern",
    Field.OAUTH: "oauth_client_id",
}


class SecretTextarea(forms.Textarea):
    """A textarea for credentials that never renders a value back, not even after a form error."""

    def __init__(self) -> None:
        super().__init__(attrs={"rows": 3, "autocomplete": "off", "spellcheck": "false"})

    def format_value(self, value: Any) -> None:
        return None


class UpstreamForm(forms.Form):
    """What an operator says about an upstream; gateway.services checks it and stores it."""

    name = forms.CharField(
        max_length=31,
        help_text="1-31 lower-case letters, digits and dashes (e.g. github). Cannot be changed later.",
    )
    # Not "prefix": a form's own attribute (the prefix of its field names).
    tool_prefix = forms.CharField(
        label="Prefix",
        max_length=31,
        required=False,
        help_text="Clients see the upstream's tools and prompts as PREFIX__NAME. Blank: the same as the name.",
    )
    unprefixed = forms.BooleanField(
        required=False,
        label="Expose names unprefixed",
        help_text="No prefix at all: the upstream's names as they are. mcpgate connects once to list them "
        "and refuses if any is taken already. Leave the prefix blank when you tick this.",
    )
    transport = forms.ChoiceField(choices=Transport.choices, initial=Transport.STREAMABLE_HTTP)
    url = forms.CharField(
        label="URL",
        max_length=2000,
        required=False,
        help_text="For HTTP upstreams: the MCP endpoint, http:// or https://, without a user or password.",
    )
    command = forms.CharField(
        max_length=2000,
        required=False,
        help_text="For stdio upstreams: the program and its arguments on one line, quoted as in a shell, "
        "e.g. npx -y @modelcontextprotocol/server-memory",
    )
    groups = forms.CharField(
        max_length=2000,
        required=False,
        help_text="oauth2-proxy groups whose members may use it, separated by commas or spaces. Blank: everyone.",
    )
    scopes = forms.MultipleChoiceField(
        choices=(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Scopes a token needs to use it, besides mcp (declare more in MCPGATE_EXTRA_SCOPES).",
    )
    timeout = forms.FloatField(label="Timeout (seconds)", initial=30.0, help_text="Per request to the upstream.")
    identity_assertion_header = forms.CharField(
        label="Identity assertion header",
        max_length=100,
        required=False,
        help_text="For Streamable HTTP upstreams: a header (e.g. X-Mcpgate-Identity) that carries, on each call "
        "made for a person, a signed 60-second JWT naming them (sub, email, groups, client_id), which the "
        "upstream verifies against /.well-known/jwks.json. Blank: none is sent.",
    )
    credential = forms.ChoiceField(
        label="Whose account",
        choices=Credential.choices,
        initial=Credential.SHARED,
        help_text="Per person (Streamable HTTP): each person connects their own account at /connect/NAME/ and "
        "their calls carry it as Authorization: Bearer. Changing back to shared deletes the people's tokens.",
    )
    token_pattern = forms.CharField(
        max_length=500,
        required=False,
        help_text="Per-person token: a regular expression a pasted token must match in full, e.g. "
        "lin_api_[A-Za-z0-9]{40}. Blank: any token.",
    )
    oauth_client_id = forms.CharField(
        label="OAuth client id",
        max_length=300,
        required=False,
        help_text="Per-person OAuth: the client id mcpgate is registered with at the upstream's authorization "
        "server, with the redirect URI https://HOST/connect/NAME/callback for each host people use. Blank: "
        "mcpgate registers itself there (RFC 7591), where the server offers it.",
    )
    oauth_client_secret = forms.CharField(
        label="OAuth client secret",
        required=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "off"}),
        help_text="Stored encrypted and never shown again. Blank: a public client (PKCE only), or, when changing, "
        "keep the stored one.",
    )
    authorization_url = forms.CharField(
        label="Authorization URL",
        max_length=2000,
        required=False,
        help_text="Per-person OAuth. Blank (with the token URL blank too): discovered from the upstream's "
        "metadata (RFC 9728, RFC 8414).",
    )
    token_url = forms.CharField(label="Token URL", max_length=2000, required=False)
    upstream_scopes = forms.CharField(
        label="Upstream scopes",
        max_length=2000,
        required=False,
        help_text="Per-person OAuth: the scopes to ask the upstream's server for, separated by spaces.",
    )
    enabled = forms.BooleanField(
        required=False, initial=True, help_text="Untick to stop serving it without removing it."
    )
    headers = forms.CharField(
        required=False,
        widget=SecretTextarea(),
        help_text="For HTTP upstreams: one 'Name: value' per line, e.g. Authorization: Bearer … "
        "Stored encrypted and never shown again.",
    )
    clear_headers = forms.BooleanField(required=False, label="Clear the stored headers")
    env = forms.CharField(
        label="Environment variables",
        required=False,
        widget=SecretTextarea(),
        help_text="For stdio upstreams: one NAME=VALUE per line. Stored encrypted and never shown again.",
    )
    clear_env = forms.BooleanField(required=False, label="Clear the stored environment variables")

    def __init__(self, *args: Any, upstream: Upstream | None = None, **kwargs: Any) -> None:
        if upstream is not None:
            kwargs.setdefault("initial", initial_of(upstream))
        super().__init__(*args, **kwargs)
        self.upstream = upstream
        scopes = self.fields["scopes"]
        assert isinstance(scopes, forms.MultipleChoiceField)
        scopes.choices = [(name, f"{name}: {text}") for name, text in all_scopes().items() if name != BASIC_SCOPE]
        if upstream is None:
            # upstream_create makes enabled upstreams; disabling is a change, audited as one.
            for field in ("enabled", "clear_headers", "clear_env"):
                del self.fields[field]
        else:
            self.fields["name"].disabled = True
            keep = "Leave blank to keep; fill to replace all; tick 'clear' to remove."
            for field, names in (("headers", upstream.header_names), ("env", upstream.env_names)):
                stored = ", ".join(names) if names else "none"
                self.fields[field].help_text = f"{self.fields[field].help_text} Stored: {stored}. {keep}"

    def clean_headers(self) -> dict[str, str]:
        return self._lines(self.cleaned_data["headers"], parse_header, shape="'Name: value'")

    def clean_env(self) -> dict[str, str]:
        return self._lines(self.cleaned_data["env"], parse_env, shape="NAME=VALUE")

    @staticmethod
    def _lines(text: str, parse: Callable[[str], tuple[str, str]], *, shape: str) -> dict[str, str]:
        values = {}
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                name, value = parse(line)
            except UpstreamInvalid as refusal:
                # The service hides what follows the first ':' or '='; a line without one may be
                # a bare secret pasted alone, which must not come back in the page either.
                message = str(refusal)
                if line.strip() in message:
                    message = f"line {number} must be {shape} (the line is not repeated here: it may hold a secret)"
                raise forms.ValidationError(message) from None
            values[name] = value
        return values

    def clean_url(self) -> str:
        url: str = self.cleaned_data["url"].strip()
        try:
            password = urlsplit(url).password
        except ValueError:  # the service says what is wrong with it
            password = None
        if password and isinstance(self.data, QueryDict):
            # The service refuses it; the page that says so must not show the password again.
            data = self.data.copy()
            data["url"] = ""
            self.data = data
        return url

    def clean_groups(self) -> list[str]:
        return self.cleaned_data["groups"].replace(",", " ").split()

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        transport = data.get("transport")
        url, command = data.get("url", "").strip(), data.get("command", "").strip()
        if transport == Transport.STDIO:
            if not command:
                self.add_error("command", "A stdio upstream needs the command that runs it.")
            if url:
                self.add_error("url", "A stdio upstream has a command, not a URL: clear this field.")
        elif transport:
            if not url:
                self.add_error("url", "An HTTP upstream needs its URL.")
            if command:
                self.add_error("command", "An HTTP upstream has a URL, not a command: clear this field.")
        if data.get("unprefixed") and data.get("tool_prefix"):
            self.add_error("tool_prefix", "Leave the prefix blank to expose the names unprefixed.")
        for field in ("headers", "env"):
            if data.get(f"clear_{field}") and data.get(field):
                self.add_error(field, "Either fill this to replace the stored values or tick 'clear', not both.")
        return data

    def target(self) -> Target:
        data = self.cleaned_data
        transport = data["transport"]
        if transport == Transport.STDIO:
            return target_from(url=None, command=data["command"])
        return target_from(url=data["url"].strip(), command=None, sse=transport == Transport.SSE)

    def oauth(self, *, target: Target, stored_secret: bool) -> OAuthSettings | None:
        """Per-person OAuth's settings (its endpoints discovered when both URLs are blank); None otherwise.

        On a change, a blank secret keeps the stored one (``stored_secret``: there is one)."""
        data = self.cleaned_data
        if data["credential"] != Credential.PERSON_OAUTH or target.transport != Transport.STREAMABLE_HTTP:
            return None
        secret: str | None = data["oauth_client_secret"]
        if not secret and stored_secret:
            secret = None
        return oauth_settings(
            name=self.upstream.name if self.upstream is not None else data["name"],
            url=target.url,
            client_id=data["oauth_client_id"],
            client_secret=secret,
            authorization_url=data["authorization_url"],
            token_url=data["token_url"],
            scopes=data["upstream_scopes"].split(),
        )

    def chosen_prefix(self) -> str | None:
        """None: the service's default (the name); "" when the operator asked for no prefix."""
        if self.cleaned_data["unprefixed"]:
            return ""
        return self.cleaned_data["tool_prefix"] or None

    def replaced(self, field: str) -> dict[str, str] | None:
        """New credentials (replacing all), {} to clear them, None to keep the stored ones."""
        if self.cleaned_data.get(f"clear_{field}"):
            return {}
        values: dict[str, str] = self.cleaned_data[field]
        return values or None

    def refuse(self, refusal: UpstreamInvalid) -> None:
        field = FIELD_OF_REFUSAL.get(refusal.field) if refusal.field is not None else None
        self.add_error(field if field in self.fields else None, str(refusal))


def initial_of(upstream: Upstream) -> dict[str, Any]:
    """The change form's values: everything but the credentials."""
    return {
        "name": upstream.name,
        "tool_prefix": upstream.prefix if upstream.prefix != upstream.name else "",
        "unprefixed": upstream.prefix == "",
        "transport": upstream.transport,
        "url": upstream.url,
        "command": upstream.target if upstream.transport == Transport.STDIO else "",
        "groups": ", ".join(upstream.groups),
        "scopes": list(upstream.scopes),
        "timeout": upstream.timeout_seconds,
        "identity_assertion_header": upstream.identity_assertion_header,
        "credential": upstream.credential,
        "token_pattern": upstream.token_pattern,
        "oauth_client_id": upstream.oauth_client_id,
        "authorization_url": upstream.authorization_url,
        "token_url": upstream.token_url,
        "upstream_scopes": " ".join(upstream.upstream_scopes),
        "enabled": upstream.enabled,
    }


def stored(sealed: str) -> dict[str, str]:
    """Stored credentials, opened for the unprefixed check only (never rendered)."""
    try:
        return unseal(sealed)
    except (KeyMissing, SealBroken) as exc:
        raise UpstreamInvalid(str(exc), Field.KEYS) from None


def display_target(upstream: Upstream) -> str:
    """The URL without its query (where a careless key could sit), or the command line."""
    if upstream.transport == Transport.STDIO:
        return upstream.target
    parts = urlsplit(upstream.url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "…" if parts.query else "", ""))


def status_of(upstream: Upstream) -> UpstreamStatus | None:
    return getattr(upstream, "status", None)


def stale(status: UpstreamStatus | None) -> bool:
    """The tools being served are the last good list: listed before the latest error."""
    return bool(
        status is not None
        and status.failing
        and status.catalog_at is not None
        and status.last_error_at is not None
        and status.catalog_at < status.last_error_at
    )


@admin.register(Upstream)
class UpstreamAdmin(admin.ModelAdmin):
    """Upstream MCP servers. Every write goes through gateway.services (audited once, with the operator)."""

    list_display = (
        "name",
        "prefix_shown",
        "transport",
        "target_shown",
        "groups_shown",
        "scopes_shown",
        "enabled",
        "health",
        "latency",
        "tools",
    )
    list_filter = ("transport", "enabled")
    search_fields = ("name", "prefix", "url")
    view_on_site = False
    form_template = "admin/gateway/upstream/form.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Upstream]:
        return super().get_queryset(request).select_related("status")

    # -- columns -----------------------------------------------------------------------
    @admin.display(description="prefix", ordering="prefix")
    def prefix_shown(self, obj: Upstream) -> str:
        return obj.prefix or "(none: names as they are)"

    @admin.display(description="target")
    def target_shown(self, obj: Upstream) -> str:
        return display_target(obj)

    @admin.display(description="groups")
    def groups_shown(self, obj: Upstream) -> str:
        return ", ".join(obj.groups) or "everyone"

    @admin.display(description="scopes")
    def scopes_shown(self, obj: Upstream) -> str:
        return " ".join([BASIC_SCOPE, *obj.scopes])

    @admin.display(description="health")
    def health(self, obj: Upstream) -> SafeString:
        return render_to_string("admin/gateway/upstream/health.html", {"status": status_of(obj)})

    @admin.display(description="latency")
    def latency(self, obj: Upstream) -> str:
        status = status_of(obj)
        return f"{status.latency_ms:.0f} ms" if status is not None and status.latency_ms is not None else "—"

    @admin.display(description="tools")
    def tools(self, obj: Upstream) -> str:
        status = status_of(obj)
        if status is None or status.catalog_at is None:
            return "—"
        count = len(status.catalog.get("tools", []))
        if stale(status):
            return (
                f"{count} (stale: the last good list, from {timezone.localtime(status.catalog_at):%Y-%m-%d %H:%M:%S})"
            )
        return str(count)

    # -- add and change: our form, then one service call ------------------------------------
    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None) -> Any:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = UpstreamForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                target = form.target()
                prefix = form.chosen_prefix()
                if prefix == "":
                    upstream_check_unprefixed(
                        name=data["name"],
                        target=target,
                        headers=data["headers"],
                        env=data["env"],
                        timeout=data["timeout"],
                        credential=data["credential"],
                    )
                oauth = form.oauth(target=target, stored_secret=False)
                upstream = upstream_create(
                    name=data["name"],
                    target=target,
                    prefix=prefix,
                    groups=data["groups"],
                    scopes=data["scopes"],
                    headers=data["headers"],
                    env=data["env"],
                    timeout=data["timeout"],
                    identity_assertion_header=data["identity_assertion_header"],
                    credential=data["credential"],
                    token_pattern=data["token_pattern"],
                    oauth=oauth,
                    local_tools=reserved_names(),
                    actor=request.user,  # type: ignore[arg-type]  # an operator: signed in
                )
            except UpstreamInvalid as refusal:
                form.refuse(refusal)
            else:
                self.message_user(
                    request,
                    f"Added the upstream {upstream.name}; every worker serves it within a few seconds. "
                    "Its credentials are stored encrypted and are not shown again.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:gateway_upstream_changelist"))
        return self._form_page(request, form, upstream=None, title="Add an upstream MCP server")

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> Any:
        upstream = self.get_object(request, unquote(object_id))
        if upstream is None:
            raise Http404("No such upstream.")
        allowed = self.has_change_permission if request.method == "POST" else self.has_view_or_change_permission
        if not allowed(request, upstream):
            raise PermissionDenied
        form = UpstreamForm(request.POST or None, upstream=upstream)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                target = form.target()
                prefix = form.chosen_prefix()
                headers, env = form.replaced("headers"), form.replaced("env")
                if prefix == "" and (
                    upstream.prefix != "" or "url" in form.changed_data or "command" in form.changed_data
                ):
                    # Checked with the credentials it will have: the new ones, or the stored ones kept.
                    upstream_check_unprefixed(
                        name=upstream.name,
                        target=target,
                        headers=stored(upstream.sealed_headers) if headers is None else headers,
                        env=stored(upstream.sealed_env) if env is None else env,
                        timeout=data["timeout"],
                        credential=data["credential"],
                    )
                oauth = form.oauth(target=target, stored_secret=bool(upstream.sealed_oauth_client_secret))
                upstream_update(
                    upstream=upstream,
                    target=target,
                    prefix=upstream.name if prefix is None else prefix,
                    groups=data["groups"],
                    scopes=data["scopes"],
                    headers=headers,
                    env=env,
                    timeout=data["timeout"],
                    identity_assertion_header=data["identity_assertion_header"],
                    credential=data["credential"],
                    token_pattern=data["token_pattern"],
                    oauth=oauth,
                    enabled=data["enabled"],
                    local_tools=reserved_names(),
                    actor=request.user,  # type: ignore[arg-type]  # an operator: signed in
                )
            except UpstreamInvalid as refusal:
                upstream.refresh_from_db()  # the service may have set fields before refusing
                form.refuse(refusal)
            else:
                self.message_user(request, f"Changed the upstream {upstream.name}.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:gateway_upstream_changelist"))
        return self._form_page(request, form, upstream=upstream, title=f"Upstream {upstream.name}")

    def _form_page(
        self, request: HttpRequest, form: UpstreamForm, *, upstream: Upstream | None, title: str
    ) -> HttpResponse:
        status = status_of(upstream) if upstream is not None else None
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.model._meta,
            "form": form,
            "upstream": upstream,
            "status": status,
            "stale": stale(status),
            "tool_count": len(status.catalog.get("tools", [])) if status is not None else None,
            "has_delete_permission": upstream is not None and self.has_delete_permission(request, upstream),
        }
        # A page with a credentials form: kept out of every cache, like the client secret page.
        return no_store(TemplateResponse(request, self.form_template, context))

    # -- remove: through the service, so it is audited -------------------------------------
    def delete_model(self, request: HttpRequest, obj: Upstream) -> None:
        upstream_remove(name=obj.name, actor=request.user)  # type: ignore[arg-type]

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Upstream]) -> None:
        for upstream in queryset:
            upstream_remove(name=upstream.name, actor=request.user)  # type: ignore[arg-type]


@admin.register(AssertionKey)
class AssertionKeyAdmin(ReadOnlyAdmin):
    """The keys that sign identity assertions (gateway.assertions): read-only; ``manage.py rotate_assertion_key``
    makes a new one. The private halves are never shown."""

    list_display = ("kid", "state", "created_at", "activates_at", "retired_at")
    fields = ("kid", "state", "created_at", "activates_at", "retired_at", "public_jwk")
    readonly_fields = fields

    @admin.display(description="state")
    def state(self, key: AssertionKey) -> str:
        now = timezone.now()
        if key.activates_at > now:
            return f"published; signs from {key.activates_at:%Y-%m-%d %H:%M} UTC"
        if key.retired_at is None or key.retired_at > now:
            return "signing"
        return f"retired; published until {key.retired_at + RETIRED_KEPT:%Y-%m-%d %H:%M} UTC"


@admin.register(Connection)
class ConnectionAdmin(ReadOnlyAdmin):
    """Who has connected their own account at which per-person upstream (gateway.connections), and when it
    was last used; revocable. The credential itself is never shown."""

    list_display = ("user", "upstream", "connected_at", "last_used_at")
    list_filter = ("upstream",)
    search_fields = ("user__email", "user__username", "upstream__name")
    fields = ("user", "upstream", "connected_at", "last_used_at")
    readonly_fields = fields
    list_select_related = ("user", "upstream")
    actions = ("revoke",)

    @admin.action(description="Revoke selected connections (the person must connect again)")
    def revoke(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        connections = list(queryset.select_related("user", "upstream"))
        for connection in connections:
            connection_delete(connection=connection, reason=DisconnectReason.OPERATOR, operator=request.user)  # type: ignore[arg-type]
        self.message_user(request, f"Revoked {len(connections)} connection(s).", messages.SUCCESS)
