"""The operators' console (issue 4): operators, clients, one-time secrets, grants, tokens, audit trail.

Personas: Olivia (olivia@example.com) is an operator by MCPGATE_OPERATOR_EMAILS; Oscar
(oscar@example.com) one through the oauth2-proxy group "mcp-admins"; Alice and Bob are people
who use clients and must never get into the console. Every request comes through oauth2-proxy
(PROXY_ADDR) to the internal host, with CSRF enforced as in a browser.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_grant_model, get_refresh_token_model

from audit.models import AuditEvent, AuditKind
from audit.services import audit_record
from identity.proxy import ProxyIdentity
from identity.services import is_operator
from oauth_ext import services
from oauth_ext.models import Client, Consent, User
from tests.conftest import (
    ALICE,
    BOB,
    CLAUDE_CALLBACK,
    GEMINI_CALLBACK,
    INTERNAL,
    Flow,
    basic_auth,
    body_of,
    proxy_headers,
)
from tests.personas import OLIVIA, OSCAR

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def operators(settings: Any) -> None:
    settings.MCPGATE_OPERATOR_EMAILS = [OLIVIA]
    settings.MCPGATE_OPERATOR_GROUPS = ["mcp-admins"]


class Console:
    """A browser signed in at oauth2-proxy as ``email``, on the internal host."""

    def __init__(self, email: str, groups: str = "") -> None:
        self.http = HttpClient(enforce_csrf_checks=True)
        self.headers = {"HTTP_HOST": INTERNAL, **proxy_headers(email, groups)}

    def get(self, url: str, **extra: Any) -> Any:
        return self.http.get(url, **self.headers, **extra)

    def post(self, url: str, data: dict[str, Any], *, form_page: str | None = None) -> Any:
        """POST as the form on ``form_page`` (default: ``url``) would, with its CSRF token."""
        page = self.get(form_page or url)
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content)
        assert token, page.content[:500]
        return self.http.post(url, {**data, "csrfmiddlewaretoken": token.group(1).decode()}, **self.headers)

    def action(self, model: str, action: str, *pks: int) -> Any:
        """Run a changelist action; ``model`` is "app_model" for DOT's, else an oauth_ext model."""
        url = reverse(f"admin:{model if '_' in model else 'oauth_ext_' + model}_changelist")
        return self.post(url, {"action": action, "_selected_action": [str(pk) for pk in pks]})


@pytest.fixture
def olivia() -> Console:
    return Console(OLIVIA)


def user(email: str) -> User:
    return User.objects.get(username=email)


def create_client(console: Console, **fields: Any) -> Any:
    data = {
        "name": "Gemini Enterprise",
        "redirect_uris": GEMINI_CALLBACK,
        "scopes": ["mcp"],
        "host": "public",
        "auth_method": "client_secret_basic",
        **fields,
    }
    return console.post(reverse("admin:oauth_ext_client_add"), data)


def shown_values(page: Any) -> dict[str, str]:
    """The label → value pairs of the one-time secret page."""
    html = page.content.decode()
    labels = dict(re.findall(r'<label for="(value-\d+)">([^<]+)</label>', html))
    values = dict(re.findall(r'id="(value-\d+)" value="([^"]*)"', html))
    return {labels[key]: values[key] for key in labels}


# ---------------------------------------------------------------------------
# Operators
# ---------------------------------------------------------------------------
def test_is_operator_by_email_or_group() -> None:
    assert is_operator(identity=ProxyIdentity(OLIVIA, OLIVIA, ()))
    assert is_operator(identity=ProxyIdentity("OLIVIA@example.com".lower(), "o", ()))
    assert is_operator(identity=ProxyIdentity(OSCAR, OSCAR, ("eng", "mcp-admins")))
    assert not is_operator(identity=ProxyIdentity(ALICE, ALICE, ("eng",)))


def test_operator_gets_staff_rights_on_first_sign_in_and_lands_on_the_overview(olivia: Console) -> None:
    page = olivia.get("/admin/")
    assert page.status_code == 200
    assert b"At a glance" in page.content
    olivia_user = user(OLIVIA)
    assert olivia_user.is_staff and olivia_user.is_superuser
    assert not olivia_user.has_usable_password()


def test_operator_by_group() -> None:
    assert Console(OSCAR, groups="eng,mcp-admins").get("/admin/").status_code == 200
    assert user(OSCAR).is_staff


def test_operator_removed_from_the_list_loses_the_console_on_the_next_request(olivia: Console, settings: Any) -> None:
    assert olivia.get("/admin/").status_code == 200
    settings.MCPGATE_OPERATOR_EMAILS = []
    page = olivia.get("/admin/", follow=True)
    assert page.status_code == 403
    assert not user(OLIVIA).is_staff and not user(OLIVIA).is_superuser


def test_non_operator_is_refused_with_a_page_not_a_password_form() -> None:
    alice = Console(ALICE, groups="eng")
    page = alice.get("/admin/", follow=True)
    assert page.status_code == 403
    assert b"not an operator" in page.content
    assert page["Cache-Control"] == "no-store"
    assert page["Content-Type"].startswith("text/html")
    assert b'type="password"' not in page.content
    assert alice.get(reverse("admin:oauth_ext_client_changelist"), follow=True).status_code == 403
    assert not user(ALICE).is_staff


def test_group_change_reported_by_the_proxy_takes_rights_away() -> None:
    assert Console(OSCAR, groups="mcp-admins").get("/admin/").status_code == 200
    assert Console(OSCAR, groups="eng").get("/admin/", follow=True).status_code == 403


def test_operator_rights_are_not_edited_in_the_console(olivia: Console) -> None:
    """Only MCPGATE_OPERATOR_EMAILS / _GROUPS make an operator: the boxes on a person's page are read-only."""
    assert Console(ALICE).get("/admin/", follow=True).status_code == 403  # Alice has signed in once
    alice = user(ALICE)
    url = reverse("admin:oauth_ext_user_change", args=[alice.pk])
    assert b'name="is_staff"' not in olivia.get(url).content
    data = {"username": ALICE, "email": ALICE, "is_active": "on", "is_staff": "on", "is_superuser": "on"}
    assert olivia.post(url, data).status_code == 302
    alice.refresh_from_db()
    assert not alice.is_staff and not alice.is_superuser
    assert Console(ALICE).get("/admin/", follow=True).status_code == 403


def test_local_superuser_signs_in_with_a_password_without_the_proxy() -> None:
    User.objects.create_superuser("root@example.com", "root@example.com", "a-long-local-password")
    http = HttpClient()
    page = http.post(
        "/admin/login/?next=/admin/",
        {"username": "root@example.com", "password": "a-long-local-password", "next": "/admin/"},
        HTTP_HOST=INTERNAL,
    )
    assert page.status_code == 302, page.content
    assert http.get("/admin/", HTTP_HOST=INTERNAL).status_code == 200


def test_anonymous_gets_the_login_form() -> None:
    page = HttpClient().get("/admin/", HTTP_HOST=INTERNAL, follow=True)
    assert page.status_code == 200
    assert b'type="password"' in page.content


# ---------------------------------------------------------------------------
# Clients: list, create with a one-time secret, rotate, disable, purge
# ---------------------------------------------------------------------------
def test_client_list_shows_kind_origin_and_approvals(olivia: Console, make_client: Callable[..., Client]) -> None:
    dcr = make_client(name="Claude Code", registered_from="203.0.113.7", registered_host="internal")
    make_client(CLAUDE_CALLBACK, name="claude.ai", registration_source=Client.RegistrationSource.CIMD)
    services.client_create(name="Gemini", redirect_uris=[GEMINI_CALLBACK], confidential=True)
    alice = User.objects.create(username=ALICE, email=ALICE)
    Consent.objects.create(user=alice, client=dcr, scopes=["mcp"], host="internal")
    page = olivia.get(reverse("admin:oauth_ext_client_changelist"))
    html = page.content.decode()
    for text in ("dynamic registration", "metadata document", "operator", "203.0.113.7", "Claude Code"):
        assert text in html
    assert re.search(r'class="field-approvals">1<', html)


def test_client_changelist_queries_do_not_grow_with_rows(
    olivia: Console, make_client: Callable[..., Client], django_assert_max_num_queries: Any
) -> None:
    olivia.get("/admin/")  # sign-in and session first
    url = reverse("admin:oauth_ext_client_changelist")
    for i in range(3):
        make_client(name=f"c{i}")
    with django_assert_max_num_queries(12):
        assert olivia.get(url).status_code == 200
    for i in range(3, 20):
        make_client(name=f"c{i}")
    with django_assert_max_num_queries(12):
        assert olivia.get(url).status_code == 200


def test_create_confidential_client_shows_the_secret_once_and_it_works(olivia: Console, http: HttpClient) -> None:
    page = create_client(olivia)
    assert page.status_code == 200, page.content
    assert "no-store" in page["Cache-Control"]
    values = shown_values(page)
    client = Client.objects.get(client_id=values["Client ID"])
    secret = values["Client secret"]
    assert values["Authorization URL"] == "https://mcp.example.com/oauth/authorize"
    assert values["Token URL"] == "https://mcp.example.com/oauth/token"
    assert values["Scopes"] == "mcp"
    assert client.client_type == Client.CLIENT_CONFIDENTIAL
    assert client.registration_source == Client.RegistrationSource.MANUAL
    assert client.registered_host == "public"
    assert secret not in client.client_secret  # stored hashed
    event = AuditEvent.objects.get(event=AuditKind.CLIENT_CREATED)
    assert event.detail == {"confidential": True, "operator": OLIVIA}
    assert secret not in str(event.detail)

    # Never shown again: not on the change page, not in the list.
    change = reverse("admin:oauth_ext_client_change", args=[client.pk])
    for url in (change, reverse("admin:oauth_ext_client_changelist")):
        assert secret.encode() not in olivia.get(url).content

    # The secret authenticates the client at the token endpoint.
    flow = Flow(http)
    redirect, pkce, _ = flow.authorize_code(client.client_id, redirect_uri=GEMINI_CALLBACK)
    response = flow.token(
        {
            "grant_type": "authorization_code",
            "code": redirect["code"],
            "redirect_uri": GEMINI_CALLBACK,
            "code_verifier": pkce.verifier,
        },
        HTTP_AUTHORIZATION=basic_auth(client.client_id, secret),
    )
    assert response.status_code == 200, response.content


def test_create_refuses_a_redirect_uri_outside_the_policy(olivia: Console) -> None:
    page = create_client(olivia, redirect_uris="https://evil.example/callback")
    assert page.status_code == 200
    assert b"errorlist" in page.content
    assert not Client.objects.exists()


def test_create_form_fields_all_have_labels(olivia: Console) -> None:
    html = olivia.get(reverse("admin:oauth_ext_client_add")).content.decode()
    tags = re.findall(r"<(?:input|select|textarea)\b[^>]*>", html)
    fields = [t for t in tags if 'type="hidden"' not in t and 'type="submit"' not in t]
    assert len(fields) >= 5
    for tag in fields:
        field_id = re.search(r'\sid="([^"]+)"', tag)
        assert "aria-label=" in tag or (field_id and f'for="{field_id.group(1)}"' in html), tag


def test_rotate_secret_shows_a_new_one_once_and_the_old_stops_working(olivia: Console, http: HttpClient) -> None:
    client, old = services.client_create(name="Gemini", redirect_uris=[GEMINI_CALLBACK], confidential=True)
    page = olivia.action("client", "rotate_secret", client.pk)
    assert page.status_code == 200
    new = shown_values(page)["Client secret"]
    assert new and new != old
    assert AuditEvent.objects.filter(event=AuditKind.CLIENT_SECRET_ROTATED, client=client).exists()

    flow = Flow(http)
    for secret, status in ((old, 401), (new, 200)):
        redirect, pkce, _ = flow.authorize_code(client.client_id, redirect_uri=GEMINI_CALLBACK)
        data = {
            "grant_type": "authorization_code",
            "code": redirect["code"],
            "redirect_uri": GEMINI_CALLBACK,
            "code_verifier": pkce.verifier,
        }
        assert flow.token(data, HTTP_AUTHORIZATION=basic_auth(client.client_id, secret)).status_code == status


def test_rotate_refuses_a_public_client(olivia: Console, public_client: Client) -> None:
    olivia.action("client", "rotate_secret", public_client.pk)
    assert AuditEvent.objects.filter(event=AuditKind.CLIENT_SECRET_ROTATED).count() == 0


def test_disable_action_refuses_authorize_with_a_clear_page_and_enable_restores(
    olivia: Console, public_client: Client, flow: Flow
) -> None:
    olivia.action("client", "disable", public_client.pk)
    public_client.refresh_from_db()
    assert public_client.disabled
    assert AuditEvent.objects.filter(event=AuditKind.CLIENT_DISABLED, client=public_client).exists()
    from tests.conftest import PKCE, authorize_params

    page = flow.authorize(authorize_params(public_client.client_id, PKCE.make()))
    assert page.status_code == 400
    assert b"has been switched off" in page.content
    assert b"Claude Code" in page.content

    olivia.action("client", "enable", public_client.pk)
    page = flow.authorize(authorize_params(public_client.client_id, PKCE.make()))
    assert page.status_code == 200


def test_disabled_client_cannot_refresh(olivia: Console, public_client: Client, flow: Flow) -> None:
    tokens = flow.get_tokens(public_client.client_id)
    services.client_set_disabled(client=public_client, disabled=True, operator=user(ALICE))
    response = flow.refresh(public_client.client_id, tokens["refresh_token"])
    assert response.status_code in (400, 401)


def test_purge_page_and_command(olivia: Console, make_client: Callable[..., Client]) -> None:
    old = make_client(name="abandoned")
    recent = make_client(name="recent")
    Client.objects.filter(pk=old.pk).update(created=timezone.now() - timedelta(days=10))
    page = olivia.post(reverse("admin:oauth_ext_client_purge"), {"days": "7"})
    assert page.status_code == 302
    assert list(Client.objects.values_list("name", flat=True)) == ["recent"]
    Client.objects.filter(pk=recent.pk).update(created=timezone.now() - timedelta(days=3))
    out = io.StringIO()
    call_command("purge_stale_clients", "--days", "2", stdout=out)
    assert "purged 1" in out.getvalue()
    call_command("purge_stale_clients", "--days", "2", stdout=out)  # again: nothing left, no error
    assert not Client.objects.exists()


def test_client_page_shows_the_timeline(olivia: Console, public_client: Client, flow: Flow) -> None:
    page = olivia.get(reverse("admin:oauth_ext_client_change", args=[public_client.pk]))
    assert b"Stalled before: <strong>Registered</strong>" in page.content  # no registration on record
    audit_record(event=AuditKind.REGISTER, client=public_client)
    flow.get_tokens(public_client.client_id)
    html = olivia.get(reverse("admin:oauth_ext_client_change", args=[public_client.pk])).content.decode()
    assert "Stalled before: <strong>/mcp tool calls</strong>" in html
    assert re.search(r"Token issued</th><td>1</td>", html)
    assert re.search(r"Approved</th><td>1</td>", html)


# ---------------------------------------------------------------------------
# Grants and tokens: never a value on a page; revocation
# ---------------------------------------------------------------------------
@pytest.fixture
def alice_tokens(public_client: Client, flow: Flow) -> dict[str, Any]:
    return flow.get_tokens(public_client.client_id)


def test_token_pages_show_fingerprints_only(olivia: Console, alice_tokens: dict[str, Any]) -> None:
    access = get_access_token_model().objects.get()
    refresh = get_refresh_token_model().objects.get()
    pages = [
        reverse("admin:oauth2_provider_accesstoken_changelist"),
        reverse("admin:oauth2_provider_accesstoken_change", args=[access.pk]),
        reverse("admin:oauth2_provider_refreshtoken_changelist"),
        reverse("admin:oauth2_provider_refreshtoken_change", args=[refresh.pk]),
        reverse("admin:oauth_ext_consent_changelist"),
        reverse("admin:audit_auditevent_changelist"),
    ]
    for url in pages:
        page = olivia.get(url)
        assert page.status_code == 200, url
        for value in (alice_tokens["access_token"], alice_tokens["refresh_token"]):
            assert value.encode() not in page.content, url
            assert value[-4:].encode() not in page.content or len(value) < 8, url
    listing = olivia.get(pages[0]).content.decode()
    assert f"sha256:{access.token_checksum[:12]}" in listing
    assert access.token_checksum not in listing


def test_grant_code_page_shows_no_code(olivia: Console, public_client: Client, flow: Flow) -> None:
    redirect, _pkce, _ = flow.authorize_code(public_client.client_id)
    grant = get_grant_model().objects.get()
    for url in (
        reverse("admin:oauth2_provider_grant_changelist"),
        reverse("admin:oauth2_provider_grant_change", args=[grant.pk]),
    ):
        page = olivia.get(url)
        assert page.status_code == 200
        assert redirect["code"].encode() not in page.content


def test_revoke_access_token_action(olivia: Console, alice_tokens: dict[str, Any], flow: Flow) -> None:
    access = get_access_token_model().objects.get()
    olivia.action("oauth2_provider_accesstoken", "revoke", access.pk)
    assert not get_access_token_model().objects.exists()
    # Its refresh token went with it.
    assert flow.refresh(access.application.client_id, alice_tokens["refresh_token"]).status_code == 400


def test_revoke_refresh_token_action(olivia: Console, alice_tokens: dict[str, Any]) -> None:
    refresh = get_refresh_token_model().objects.get()
    olivia.action("oauth2_provider_refreshtoken", "revoke", refresh.pk)
    refresh.refresh_from_db()
    assert refresh.revoked is not None
    assert not get_access_token_model().objects.exists()


def test_consent_list_and_revoke(olivia: Console, alice_tokens: dict[str, Any], public_client: Client) -> None:
    consent = Consent.objects.get()
    AuditEvent.objects.create(event=AuditKind.TOOL_CALL, user=consent.user, client=public_client, email=ALICE)
    html = olivia.get(reverse("admin:oauth_ext_consent_changelist")).content.decode()
    assert ALICE in html
    assert "Claude Code" in html
    assert re.search(r'class="field-last_tool_call[^"]*">[^<]*\d{4}', html)  # the call's date, not "—"
    page = olivia.action("consent", "revoke", consent.pk)
    assert page.status_code == 302
    assert not Consent.objects.exists()
    assert not get_access_token_model().objects.filter(user=consent.user).exists()
    assert not get_refresh_token_model().objects.filter(user=consent.user, revoked__isnull=True).exists()
    assert AuditEvent.objects.filter(event=AuditKind.CONSENT_REVOKED, user=consent.user).exists()


def test_consent_changelist_queries_do_not_grow(
    olivia: Console, make_client: Callable[..., Client], django_assert_max_num_queries: Any
) -> None:
    olivia.get("/admin/")
    url = reverse("admin:oauth_ext_consent_changelist")
    alice = User.objects.create(username=ALICE, email=ALICE)
    for i in range(15):
        Consent.objects.create(user=alice, client=make_client(name=f"c{i}"), scopes=["mcp"])
    with django_assert_max_num_queries(12):
        assert olivia.get(url).status_code == 200


def test_offboarding_revokes_all_of_a_persons_tokens(
    olivia: Console, public_client: Client, make_client: Callable[..., Client], flow: Flow
) -> None:
    other = make_client(name="Cursor")
    flow.get_tokens(public_client.client_id)
    flow.get_tokens(other.client_id)
    flow.get_tokens(public_client.client_id, email=BOB)
    alice = user(ALICE)
    olivia.action("user", "revoke_all_tokens", alice.pk)
    assert not get_access_token_model().objects.filter(user=alice).exists()
    assert not Consent.objects.filter(user=alice).exists()
    assert get_access_token_model().objects.filter(user=user(BOB)).count() == 1


def test_client_revoke_all_tokens_action(olivia: Console, public_client: Client, flow: Flow) -> None:
    flow.get_tokens(public_client.client_id)
    flow.get_tokens(public_client.client_id, email=BOB)
    olivia.action("client", "revoke_all_tokens", public_client.pk)
    assert not get_access_token_model().objects.filter(application=public_client).exists()
    assert not get_refresh_token_model().objects.filter(application=public_client, revoked__isnull=True).exists()


def test_registration_tokens_survive_client_revocation(public_client: Client) -> None:
    services.registration_token_issue(client=public_client)
    services.client_revoke_all_tokens(client=public_client, operator=User.objects.create(username=OLIVIA))
    assert get_access_token_model().objects.filter(application=public_client, user=None).count() == 1


# ---------------------------------------------------------------------------
# Audit trail: read-only, filterable, CSV
# ---------------------------------------------------------------------------
def test_audit_admin_is_read_only(olivia: Console) -> None:
    olivia.get("/admin/")
    event = AuditEvent.objects.get(event=AuditKind.SIGN_IN)
    assert olivia.get(reverse("admin:audit_auditevent_add")).status_code == 403
    assert olivia.get(reverse("admin:audit_auditevent_delete", args=[event.pk])).status_code == 403
    page = olivia.get(reverse("admin:audit_auditevent_change", args=[event.pk]))
    assert page.status_code == 200
    assert b'name="_save"' not in page.content


def test_audit_filters_and_csv_export_of_the_filtered_list(olivia: Console, public_client: Client) -> None:
    olivia.get("/admin/")
    AuditEvent.objects.create(event=AuditKind.TOOL_CALL, email=ALICE, client=public_client, detail={"tool": "=cmd()"})
    AuditEvent.objects.create(event=AuditKind.TOOL_CALL, email=BOB, detail={"tool": "whoami"})
    url = reverse("admin:audit_auditevent_changelist")
    listing = olivia.get(url + "?event=tool_call").content.decode()
    assert "Export these events as CSV" in listing
    assert "?event=tool_call" in listing
    response = olivia.get(reverse("admin:audit_auditevent_export") + f"?event=tool_call&q={ALICE}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(body_of(response).decode())))
    assert rows[0][:3] == ["created", "event", "email"]
    assert len(rows) == 2
    assert rows[1][2] == ALICE
    assert rows[1][4] == public_client.client_id
    assert rows[1][7] == '{"tool": "=cmd()"}'


def test_audit_export_refused_to_non_operators() -> None:
    page = Console(ALICE).get(reverse("admin:audit_auditevent_export"), follow=True)
    assert page.status_code == 403


def test_audit_changelist_queries_do_not_grow(olivia: Console, django_assert_max_num_queries: Any) -> None:
    olivia.get("/admin/")
    url = reverse("admin:audit_auditevent_changelist")
    for i in range(40):
        AuditEvent.objects.create(event=AuditKind.TOOL_CALL, email=f"p{i}@example.com")
    with django_assert_max_num_queries(14):
        assert olivia.get(url).status_code == 200


def test_overview_counts_and_chart(olivia: Console, alice_tokens: dict[str, Any], public_client: Client) -> None:
    for _ in range(3):
        AuditEvent.objects.create(event=AuditKind.TOOL_CALL, client=public_client, detail={"outcome": "ok"})
    AuditEvent.objects.create(event=AuditKind.TOOL_CALL, created=timezone.now() - timedelta(hours=30))
    page = olivia.get("/admin/")
    overview = page.context["overview"]
    assert overview["tool_calls_24h"] == 3
    assert overview["live_access_tokens"] == 1
    assert overview["people_with_tokens"] == 1
    assert dict(overview["clients_by_kind"])["dynamic registration"] == 1
    assert len(overview["bars"]) == 24
    assert overview["bars"][-1]["count"] == 3
    assert b'class="mcpgate-chart"' in page.content


# ---------------------------------------------------------------------------
# Services on their own
# ---------------------------------------------------------------------------
def test_operator_rights_changes_are_audited(olivia: Console, settings: Any) -> None:
    olivia.get("/admin/")
    olivia.get("/admin/")  # already an operator: nothing new
    assert AuditEvent.objects.filter(event=AuditKind.OPERATOR_GRANTED, email=OLIVIA).count() == 1
    settings.MCPGATE_OPERATOR_EMAILS = []
    olivia.get("/admin/")
    assert AuditEvent.objects.filter(event=AuditKind.OPERATOR_REMOVED, email=OLIVIA).count() == 1


def test_client_rotate_secret_refuses_a_public_client(public_client: Client) -> None:
    with pytest.raises(ValueError, match="confidential"):
        services.client_rotate_secret(client=public_client, operator=User.objects.create(username=OLIVIA))


def test_client_set_disabled_reports_whether_anything_changed(public_client: Client) -> None:
    olivia = User.objects.create(username=OLIVIA, email=OLIVIA)
    assert services.client_set_disabled(client=public_client, disabled=True, operator=olivia)
    assert not services.client_set_disabled(client=public_client, disabled=True, operator=olivia)
    assert services.client_set_disabled(client=public_client, disabled=False, operator=olivia)
    events = list(AuditEvent.objects.order_by("created", "id").values_list("event", flat=True))
    assert events == ["client_disabled", "client_enabled"]
    assert AuditEvent.objects.filter(detail__operator=OLIVIA).count() == 2


def test_token_revoke_refuses_other_objects(public_client: Client) -> None:
    with pytest.raises(TypeError):
        services.token_revoke(token=public_client, operator=User.objects.create(username=OLIVIA))


def test_revoke_authorization_code_action(olivia: Console, public_client: Client, flow: Flow) -> None:
    redirect, pkce, _ = flow.authorize_code(public_client.client_id)
    olivia.action("oauth2_provider_grant", "revoke", get_grant_model().objects.get().pk)
    assert not get_grant_model().objects.exists()
    assert flow.exchange(public_client.client_id, redirect["code"], pkce).status_code == 400


def test_disabling_from_the_change_form_goes_through_the_service(olivia: Console, public_client: Client) -> None:
    url = reverse("admin:oauth_ext_client_change", args=[public_client.pk])
    page = olivia.post(url, {"name": "Claude Code (renamed)", "disabled": "on"})
    assert page.status_code == 302, page.content
    public_client.refresh_from_db()
    assert public_client.disabled
    assert public_client.name == "Claude Code (renamed)"
    assert AuditEvent.objects.filter(event=AuditKind.CLIENT_DISABLED, client=public_client).exists()


def test_people_are_not_added_in_the_console(olivia: Console) -> None:
    assert olivia.get(reverse("admin:oauth_ext_user_add")).status_code == 403


def test_purge_command_refuses_less_than_a_day() -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("purge_stale_clients", "--days", "0")


def test_token_changelist_queries_do_not_grow(
    olivia: Console, public_client: Client, flow: Flow, django_assert_max_num_queries: Any
) -> None:
    olivia.get("/admin/")
    for _ in range(3):
        flow.get_tokens(public_client.client_id)
    url = reverse("admin:oauth2_provider_accesstoken_changelist")
    with django_assert_max_num_queries(14):
        assert olivia.get(url).status_code == 200
    for _ in range(6):
        flow.get_tokens(public_client.client_id, email=BOB)
    with django_assert_max_num_queries(14):
        assert olivia.get(url).status_code == 200


def test_client_page_lists_the_latest_refusals(olivia: Console, public_client: Client, flow: Flow) -> None:
    from tests.conftest import PKCE, authorize_params

    flow.authorize(authorize_params(public_client.client_id, PKCE.make(), redirect_uri="http://127.0.0.1:1/x"))
    page = flow.authorize(authorize_params(public_client.client_id, PKCE.make()))
    flow.consent(page, allow=False)
    html = olivia.get(reverse("admin:oauth_ext_client_change", args=[public_client.pk])).content.decode()
    assert "Latest refusals and errors" in html
    assert "<strong>consent refused</strong> alice@example.com" in html


def test_posting_the_add_form_again_makes_no_second_client(olivia: Console) -> None:
    add = reverse("admin:oauth_ext_client_add")
    form = olivia.get(add).content.decode()
    nonce = re.search(r'name="nonce" value="([^"]+)"', form)
    assert nonce
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
    assert token
    data = {
        "name": "Gemini",
        "redirect_uris": GEMINI_CALLBACK,
        "scopes": ["mcp"],
        "host": "public",
        "auth_method": "client_secret_basic",
        "nonce": nonce.group(1),
        "csrfmiddlewaretoken": token.group(1),
    }
    first = olivia.http.post(add, data, **olivia.headers)
    assert first.status_code == 200 and "Client secret" in shown_values(first)
    again = olivia.http.post(add, data, **olivia.headers)  # the browser's "resubmit" on reload
    client = Client.objects.get()
    assert again.status_code == 302
    assert again["Location"] == reverse("admin:oauth_ext_client_change", args=[client.pk])


def test_audit_filters_by_person_and_client(olivia: Console, public_client: Client) -> None:
    olivia.get("/admin/")
    alice = User.objects.create(username=ALICE, email=ALICE)
    AuditEvent.objects.create(event=AuditKind.TOOL_CALL, user=alice, email=ALICE, client=public_client)
    AuditEvent.objects.create(event=AuditKind.TOOL_CALL, email=BOB)
    url = reverse("admin:audit_auditevent_changelist")
    by_person = olivia.get(url + f"?user__id__exact={alice.pk}").content.decode()
    by_client = olivia.get(url + f"?client__id__exact={public_client.pk}").content.decode()
    for html in (by_person, by_client):
        assert ALICE in html and BOB not in html.split('id="result_list"')[1]
    assert olivia.get(url + "?client__id__exact=x").status_code == 200
