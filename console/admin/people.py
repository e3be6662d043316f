"""People in the console: who signed in, their groups and grants, and revoking everything of theirs."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from gateway.connections import connections_delete_for_person
from oauth_ext import services
from oauth_ext.models import User

# A person's groups are oauth2-proxy's (User.proxy_groups, re-read at every sign-in); Django's own
# groups and permissions are unused (operators are superusers), so their page would only mislead.
admin.site.unregister(Group)


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    """People as oauth2-proxy reported them; their operator rights are shown, never edited here.

    ``identity.services`` sets ``is_staff`` and ``is_superuser`` from MCPGATE_OPERATOR_EMAILS /
    MCPGATE_OPERATOR_GROUPS on every proxied request, so a box ticked here would be undone by the
    person's next request: the configuration is the one place operators are named.
    """

    list_display = ("username", "is_active", "is_staff", "last_sign_in_host", "last_login", "consent_count")
    list_filter = ("is_active", "is_staff", "last_sign_in_host")
    fieldsets = (
        (None, {"fields": ("username", "email", "is_active")}),
        ("From oauth2-proxy", {"fields": ("proxy_subject", "proxy_groups", "last_sign_in_host")}),
        ("Rights (from MCPGATE_OPERATOR_EMAILS / _GROUPS, at every sign-in)", {"fields": ("is_staff", "is_superuser")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    readonly_fields = (
        "proxy_subject",
        "proxy_groups",
        "last_sign_in_host",
        "is_staff",
        "is_superuser",
        "last_login",
        "date_joined",
    )
    actions = ("revoke_all_tokens",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        # People are created by their first sign-in through oauth2-proxy; a local account for
        # `make run` comes from `manage.py createsuperuser`.
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        return super().get_queryset(request).annotate(n_consents=Count("consents"))

    @admin.display(description="grants", ordering="n_consents")
    def consent_count(self, obj: User) -> SafeString:
        url = reverse("admin:oauth_ext_consent_changelist") + f"?user__id__exact={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, getattr(obj, "n_consents", 0))

    @admin.action(
        description="Offboard: revoke all tokens and grants of the selected people, and forget their upstream accounts"
    )
    def revoke_all_tokens(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        people, operator = list(queryset), request.user
        assert isinstance(operator, User)  # the console is for signed-in operators
        n = sum(services.user_revoke_all_tokens(user=u, operator=operator) for u in people)
        # Their own accounts at per-person upstreams (gateway.connections) go too: nothing acts as them any more.
        accounts = sum(connections_delete_for_person(user=u, operator=operator) for u in people)
        self.message_user(
            request, f"Revoked {n} token(s) and code(s); forgot {accounts} upstream account(s).", messages.SUCCESS
        )
