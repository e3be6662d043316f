"""Clients in the console: create (secret shown once), rotate, disable, purge, and each client's timeline."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from console.selectors import CLIENT_KINDS, client_timeline
from mcpgate.hosts import Host, configured_hosts
from oauth_ext import services
from oauth_ext.models import Client
from oauth_ext.scopes import BASIC_SCOPE, all_scopes

from .common import no_store


class ClientCreateForm(forms.Form):
    """An operator-made confidential client (Gemini Enterprise, Cursor Cloud Agents)."""

    name = forms.CharField(max_length=255, help_text="Shown to people on the consent page.")
    redirect_uris = forms.CharField(
        label="Redirect URIs",
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One per line. Loopback, or on the redirect URI allowlist, as for self-registered clients.",
    )
    scopes = forms.MultipleChoiceField(
        choices=(),
        initial=[BASIC_SCOPE],
        widget=forms.CheckboxSelectMultiple,
        help_text="The scopes to enter in the vendor's form.",
    )
    host = forms.ChoiceField(choices=(), label="Host it will use", help_text="Cloud connectors use the public host.")
    auth_method = forms.ChoiceField(
        label="Client authentication",
        choices=[
            (Client.AuthMethod.SECRET_BASIC, "client_secret_basic (HTTP Basic)"),
            (Client.AuthMethod.SECRET_POST, "client_secret_post (in the form body)"),
        ],
        help_text="Both are accepted at the token endpoint; this is what the client is told.",
    )
    # A reload of the secret page re-posts this form; the nonce lets the second post be told
    # apart from a new client (see ClientAdmin.add_view).
    nonce = forms.CharField(widget=forms.HiddenInput, required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        scopes = self.fields["scopes"]
        host = self.fields["host"]
        assert isinstance(scopes, forms.MultipleChoiceField) and isinstance(host, forms.ChoiceField)
        scopes.choices = [(name, f"{name}: {text}") for name, text in all_scopes().items()]
        hosts = configured_hosts()
        host.choices = [(h.name, f"{h.name} ({h.base_url})") for h in hosts]
        self.fields["host"].initial = "public" if any(h.name == "public" for h in hosts) else hosts[0].name

    def clean_redirect_uris(self) -> list[str]:
        return self.cleaned_data["redirect_uris"].split()


class PurgeForm(forms.Form):
    """How old an unused self-registered client must be to be purged."""

    days = forms.IntegerField(
        min_value=1,
        initial=7,
        label="Registered more than this many days ago",
        help_text="Self-registered clients that never obtained a token; operator-made clients are never purged.",
    )


CREATED_CLIENTS_KEY = "mcpgate_created_clients"  # session: add-form nonce → client pk


def _host(name: str) -> Host:
    hosts = configured_hosts()
    return next((h for h in hosts if h.name == name), hosts[0])


def secret_page(
    request: HttpRequest, *, model_admin: admin.ModelAdmin, client: Client, secret: str, scopes: list[str]
) -> HttpResponse:
    """The one page that shows a client secret: not cached, not stored, not shown again."""
    host = _host(client.registered_host or "public")
    context = {
        **model_admin.admin_site.each_context(request),
        "title": f"Client secret for {client.name}",
        "opts": model_admin.model._meta,
        "client": client,
        "values": [
            ("Client ID", client.client_id),
            ("Client secret", secret),
            ("Authorization URL", host.url("/oauth/authorize")),
            ("Token URL", host.url("/oauth/token")),
            ("Scopes", " ".join(scopes)),
            ("MCP server URL", host.resource),
            ("Client authentication", client.token_endpoint_auth_method),
        ],
        "host": host,
        "change_url": reverse("admin:oauth_ext_client_change", args=[client.pk]),
    }
    return no_store(TemplateResponse(request, "admin/oauth_ext/client/secret.html", context))


class ClientAdmin(admin.ModelAdmin):
    """DOT's Application, as mcpgate's Client (OAUTH2_PROVIDER["APPLICATION_ADMIN_CLASS"] names it).

    Never deleted here (that would hide what happened): disabled, or purged when unused.
    """

    list_display = (
        "name_or_id",
        "kind",
        "registered_from",
        "registered_host",
        "created",
        "last_used_at",
        "approvals",
        "disabled",
    )
    list_filter = ("registration_source", "client_type", "registered_host", "disabled")
    search_fields = ("name", "client_id", "software_id")
    date_hierarchy = "created"
    ordering = ("-created",)
    view_on_site = False  # DOT's application pages are not served here
    actions = ("disable", "enable", "rotate_secret", "revoke_all_tokens")
    readonly_fields = (
        "client_id",
        "kind",
        "client_type",
        "token_endpoint_auth_method",
        "redirect_list",
        "software_id",
        "software_version",
        "registered_from",
        "registered_host",
        "created",
        "updated",
        "last_used_at",
        "approvals_link",
        "timeline",
    )
    fieldsets = (
        (None, {"fields": ("name", "client_id", "kind", "client_type", "token_endpoint_auth_method", "disabled")}),
        ("Where it came from", {"fields": ("redirect_list", "software_id", "software_version")}),
        (
            "Use",
            {"fields": ("registered_from", "registered_host", "created", "updated", "last_used_at", "approvals_link")},
        ),
        ("Timeline", {"fields": ("timeline",)}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Client]:
        return super().get_queryset(request).annotate(approval_count=Count("consents"))

    def get_urls(self) -> list[Any]:
        urls = [
            path("purge/", self.admin_site.admin_view(self.purge_view), name="oauth_ext_client_purge"),
        ]
        return urls + super().get_urls()

    # -- columns -----------------------------------------------------------------------
    @admin.display(description="name", ordering="name")
    def name_or_id(self, obj: Client) -> str:
        return obj.name or obj.client_id

    @admin.display(description="kind", ordering="registration_source")
    def kind(self, obj: Client) -> str:
        return str(CLIENT_KINDS.get(obj.registration_source, obj.registration_source))

    @admin.display(description="people who approved", ordering="approval_count")
    def approvals(self, obj: Client) -> int:
        return int(getattr(obj, "approval_count", 0))

    @admin.display(description="people who approved")
    def approvals_link(self, obj: Client) -> SafeString:
        url = reverse("admin:oauth_ext_consent_changelist") + f"?client__id__exact={obj.pk}"
        return format_html('<a href="{}">{} (see the grants)</a>', url, self.approvals(obj))

    @admin.display(description="redirect URIs")
    def redirect_list(self, obj: Client) -> SafeString:
        return format_html_join("", "<code>{}</code><br>", ((u,) for u in obj.redirect_uris.split()))

    @admin.display(description="timeline (from the audit trail)")
    def timeline(self, obj: Client) -> SafeString:
        return render_to_string(
            "admin/oauth_ext/client/timeline.html", {"client": obj, "timeline": client_timeline(client=obj)}
        )

    # -- add: our form, the service, and the one-time secret page ------------------------
    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None) -> Any:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ClientCreateForm(request.POST or None, initial={"nonce": secrets.token_urlsafe(16)})
        created: dict[str, int] = request.session.get(CREATED_CLIENTS_KEY, {})
        if request.method == "POST" and request.POST.get("nonce") in created:
            # The form was posted again (a reload of the secret page): no second client.
            self.message_user(
                request, "This client was already created; its secret is not shown again.", messages.WARNING
            )
            return HttpResponseRedirect(reverse("admin:oauth_ext_client_change", args=[created[request.POST["nonce"]]]))
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                client, secret = services.client_create(
                    name=data["name"],
                    redirect_uris=data["redirect_uris"],
                    confidential=True,
                    auth_method=data["auth_method"],
                    host=data["host"],
                    operator=request.user,
                )
            except ValidationError as error:
                for field, problems in error.message_dict.items():
                    form.add_error(field if field in form.fields else None, problems)
            else:
                assert secret is not None
                if data["nonce"]:
                    request.session[CREATED_CLIENTS_KEY] = {**created, data["nonce"]: client.pk}
                return secret_page(request, model_admin=self, client=client, secret=secret, scopes=data["scopes"])
        context = {
            **self.admin_site.each_context(request),
            "title": "Add a confidential client",
            "opts": self.model._meta,
            "form": form,
        }
        return TemplateResponse(request, "admin/oauth_ext/client/create.html", context)

    def has_delete_permission(self, request: HttpRequest, obj: Client | None = None) -> bool:
        # Deleting hides what happened; disable instead, or purge unused clients.
        return False

    def save_model(self, request: HttpRequest, obj: Client, form: Any, change: bool) -> None:
        """Only the name is edited here; disabling goes through the service (audited)."""
        if "disabled" in form.changed_data:
            services.client_set_disabled(client=obj, disabled=obj.disabled, operator=request.user)
        if "name" in form.changed_data:
            obj.save(update_fields=["name", "updated"])

    # -- actions -----------------------------------------------------------------------
    @admin.action(description="Disable selected clients (their tokens stop working at once)")
    def disable(self, request: HttpRequest, queryset: QuerySet[Client]) -> None:
        n = sum(services.client_set_disabled(client=c, disabled=True, operator=request.user) for c in queryset)
        self.message_user(request, f"Disabled {n} client(s).", messages.SUCCESS)

    @admin.action(description="Enable selected clients")
    def enable(self, request: HttpRequest, queryset: QuerySet[Client]) -> None:
        n = sum(services.client_set_disabled(client=c, disabled=False, operator=request.user) for c in queryset)
        self.message_user(request, f"Enabled {n} client(s).", messages.SUCCESS)

    @admin.action(description="Rotate the secret of the selected confidential client")
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet[Client]) -> HttpResponse | None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one client to rotate its secret.", messages.WARNING)
            return None
        client = queryset.get()
        if client.client_type != Client.CLIENT_CONFIDENTIAL:
            self.message_user(request, "A public client has no secret.", messages.ERROR)
            return None
        secret = services.client_rotate_secret(client=client, operator=request.user)
        return secret_page(request, model_admin=self, client=client, secret=secret, scopes=[BASIC_SCOPE])

    @admin.action(description="Revoke all tokens of the selected clients")
    def revoke_all_tokens(self, request: HttpRequest, queryset: QuerySet[Client]) -> None:
        n = sum(services.client_revoke_all_tokens(client=c, operator=request.user) for c in queryset)
        self.message_user(request, f"Revoked {n} token(s) and code(s).", messages.SUCCESS)

    # -- purge ---------------------------------------------------------------------------
    def purge_view(self, request: HttpRequest) -> HttpResponse:
        """Purge self-registered clients never used and older than N days (also a command)."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        form = PurgeForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            n = services.clients_purge_unused(older_than=timedelta(days=form.cleaned_data["days"]))
            self.message_user(request, f"Purged {n} unused client(s).", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:oauth_ext_client_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Purge unused clients",
            "opts": self.model._meta,
            "form": form,
        }
        return TemplateResponse(request, "admin/oauth_ext/client/purge.html", context)
