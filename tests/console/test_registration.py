"""Which admin class shows each model in the console, and that every list answers within a query budget.

DOT's admin module registers its models itself, with the classes OAUTH2_PROVIDER's
``*_ADMIN_CLASS`` settings name; if a setting were lost, DOT's own admins (which show masked token
values) would take their place without an error. So the site is asked which class it uses for
each model it shows. Olivia (olivia@example.com) is the operator; Alice holds a grant, tokens, a
pending code and an ID token for Claude Code, so that no list is empty.
"""

from __future__ import annotations

import inspect
from datetime import timedelta
from typing import Any
from uuid import uuid4

import oauth2_provider.admin
import pytest
from cryptography.fernet import Fernet
from django.contrib import admin
from django.db.models import Model
from django.test import Client as HttpClient
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
    get_grant_model,
    get_id_token_model,
    get_refresh_token_model,
)

from audit.models import AuditEvent
from console.admin import audit, clients, credentials, people, policy, upstreams
from console.site import OperatorsAdminSite
from gateway.connections import connection_token_save
from gateway.models import AssertionKey, Connection, Credential, Transport, Upstream
from gateway.services import Target, upstream_create
from oauth_ext.models import Client, Consent, RedirectAllowlistEntry, User
from tests.conftest import ALICE, INTERNAL, Flow, proxy_headers
from tests.personas import OLIVIA

pytestmark = pytest.mark.django_db


# Every model the console shows, and the class that must show it.
CONSOLE_ADMINS: dict[type[Model], type[admin.ModelAdmin]] = {
    get_application_model(): clients.ClientAdmin,
    get_access_token_model(): credentials.AccessTokenAdmin,
    get_refresh_token_model(): credentials.RefreshTokenAdmin,
    get_grant_model(): credentials.GrantAdmin,
    get_id_token_model(): credentials.IDTokenAdmin,
    Consent: credentials.ConsentAdmin,
    User: people.UserAdmin,
    RedirectAllowlistEntry: policy.RedirectAllowlistEntryAdmin,
    AuditEvent: audit.AuditEventAdmin,
    Upstream: upstreams.UpstreamAdmin,
    AssertionKey: upstreams.AssertionKeyAdmin,
    Connection: upstreams.ConnectionAdmin,
}

# Queries per change list, as measured on SQLite (and met on PostgreSQL) with the rows of the
# ``alice_holds_everything`` fixture: the session and the user (4, with the savepoint around the
# sign-in check), the count, the page, and the date and filter choices. A list that starts
# querying per row, or a filter that starts scanning a table, breaks them.
CHANGELIST_BUDGETS = {
    "oauth_ext_client": 10,
    "oauth2_provider_accesstoken": 10,
    "oauth2_provider_refreshtoken": 8,
    "oauth2_provider_grant": 8,
    "oauth2_provider_idtoken": 8,
    "oauth_ext_consent": 10,
    "oauth_ext_user": 8,
    "oauth_ext_redirectallowlistentry": 7,
    "audit_auditevent": 11,
    "gateway_upstream": 9,
    "gateway_assertionkey": 7,
    "gateway_connection": 9,
}

# The admin classes DOT's admin module defines (not those it imports).
DOT_ADMINS = tuple(
    cls
    for _, cls in inspect.getmembers(oauth2_provider.admin, inspect.isclass)
    if cls.__module__ == oauth2_provider.admin.__name__
)


@pytest.fixture(autouse=True)
def operators(settings: Any) -> None:
    settings.MCPGATE_OPERATOR_EMAILS = [OLIVIA]
    settings.MCPGATE_UPSTREAM_KEYS = [Fernet.generate_key().decode()]


def shown_models() -> dict[type[Model], admin.ModelAdmin]:
    """The models on the console's index page for an operator, each with the admin that shows it."""
    olivia = User.objects.create(username=OLIVIA, email=OLIVIA, is_staff=True, is_superuser=True)
    request = RequestFactory().get("/admin/")
    request.user = olivia
    models = [model["model"] for app in admin.site.get_app_list(request) for model in app["models"]]
    return {model: admin.site.get_model_admin(model) for model in models}


def test_the_console_is_the_operators_site() -> None:
    assert isinstance(admin.site, OperatorsAdminSite)


def test_every_model_the_console_shows_uses_mcpgates_admin_class() -> None:
    shown = shown_models()
    assert set(shown) == set(CONSOLE_ADMINS)
    assert {model: type(model_admin) for model, model_admin in shown.items()} == CONSOLE_ADMINS


def test_no_model_is_shown_by_dots_own_admin_with_its_masked_tokens() -> None:
    for model, model_admin in shown_models().items():
        assert not isinstance(model_admin, DOT_ADMINS), (model, type(model_admin))


@pytest.fixture
def alice_holds_everything(public_client: Client, flow: Flow) -> None:
    """A grant, an access and a refresh token, a pending code, an ID token, two upstreams (one she connected
    her own account at) and their audit trail."""
    flow.get_tokens(public_client.client_id)
    flow.authorize_code(public_client.client_id)
    get_id_token_model().objects.create(
        user=User.objects.get(username=ALICE),
        application=public_client,
        jti=uuid4(),
        expires=timezone.now() + timedelta(hours=1),
    )
    upstream_create(
        name="github",
        target=Target(Transport.STREAMABLE_HTTP, url="https://github.example/mcp"),
        identity_assertion_header="X-Mcpgate-Identity",  # and so its signing key
    )
    linear = upstream_create(
        name="linear",
        target=Target(Transport.STREAMABLE_HTTP, url="https://linear.example/mcp"),
        credential=Credential.PERSON_TOKEN,
    )
    connection_token_save(user=User.objects.get(username=ALICE), upstream=linear, token="lin_api_alice")


@pytest.mark.parametrize("model", CHANGELIST_BUDGETS)
def test_every_change_list_answers_an_operator_within_its_query_budget(
    model: str, alice_holds_everything: None, django_assert_max_num_queries: Any
) -> None:
    olivia = HttpClient()
    headers: dict[str, Any] = {"HTTP_HOST": INTERNAL, **proxy_headers(OLIVIA)}
    assert olivia.get("/admin/", **headers).status_code == 200  # signs in: the session and the user exist
    with django_assert_max_num_queries(CHANGELIST_BUDGETS[model]):
        page = olivia.get(reverse(f"admin:{model}_changelist"), **headers)
    assert page.status_code == 200
    assert b'id="result_list"' in page.content  # a list with rows, not an empty page


def test_the_budgets_cover_every_model_the_console_shows() -> None:
    assert {f"{m._meta.app_label}_{m._meta.model_name}" for m in shown_models()} == set(CHANGELIST_BUDGETS)
