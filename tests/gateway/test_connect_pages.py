"""/connect/ (issue 12, per-person token): people connect and disconnect their own accounts; operators revoke them."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.urls import reverse

from audit.models import AuditEvent, AuditKind
from gateway.connections import connection_token_save
from gateway.models import Connection, Credential, Transport, Upstream
from gateway.services import Target, upstream_create, upstream_update
from oauth_ext.models import User
from tests.conftest import Flow, authorize_params
from tests.console.test_admin import Console
from tests.e2e.oauthclient import PKCE
from tests.personas import ALICE, BOB, OLIVIA

pytestmark = pytest.mark.django_db

TOKEN = "lin_api_" + "a1B2" * 10  # what a Linear API key looks like
PATTERN = r"lin_api_[A-Za-z0-9]{40}"


@pytest.fixture(autouse=True)
def keys(settings: Any) -> str:
    key = Fernet.generate_key().decode()
    settings.MCPGATE_UPSTREAM_KEYS = [key]
    settings.MCPGATE_OPERATOR_EMAILS = [OLIVIA]
    return key


def http_upstream(name: str, **options: Any) -> Upstream:
    return upstream_create(
        name=name, target=Target(Transport.STREAMABLE_HTTP, url=f"https://{name}.example/mcp"), **options
    )


@pytest.fixture
def linear() -> Upstream:
    return http_upstream("linear", credential=Credential.PERSON_TOKEN, token_pattern=PATTERN)


@pytest.fixture
def alice() -> Console:
    """Alice's browser, signed in at oauth2-proxy (group eng)."""
    return Console(ALICE, "eng")


def person(email: str) -> User:
    return User.objects.get(username=email)


def connect_url(name: str) -> str:
    return reverse("connect_upstream", args=[name])


def rows(page: Any) -> list[tuple[str, str]]:
    """The /connect/ table: each upstream's name and the state of the person's account there."""
    html = page.content.decode()
    return re.findall(r"<tr>\s*<td><strong>([^<]+)</strong></td>\s*<td>([^<;]+)", html)


def alert(page: Any) -> str:
    found = re.search(r'<p class="error" role="alert">([^<]+)</p>', page.content.decode())
    assert found, page.content[:800]
    return found.group(1).replace("&#x27;", "'")


def test_the_list_shows_the_per_person_upstreams_the_person_may_use_and_which_are_connected(
    alice: Console, linear: Upstream
) -> None:
    http_upstream("finance", credential=Credential.PERSON_TOKEN, groups=["finance"])  # not Alice's group
    http_upstream("github")  # shared: nothing to connect
    http_upstream("notion", credential=Credential.PERSON_TOKEN, groups=["eng"])

    page = alice.get("/connect/")
    assert page.status_code == 200 and page["Cache-Control"].startswith("max-age=0")
    assert "form-action 'self'" in page["Content-Security-Policy"]
    assert rows(page) == [("linear", "not connected"), ("notion", "not connected")]

    connection_token_save(user=person(ALICE), upstream=linear, token=TOKEN)
    assert [state.split(" ")[0] for _, state in rows(alice.get("/connect/"))] == ["connected", "not"]


def test_nothing_to_connect_says_so(alice: Console) -> None:
    http_upstream("github")
    page = alice.get("/connect/")
    assert "Nothing to connect." in page.content.decode() and rows(page) == []


def test_the_upstream_page_says_where_the_token_goes_and_what_is_done_with_it(alice: Console, linear: Upstream) -> None:
    page = alice.get(connect_url("linear"))
    html = page.content.decode()
    assert page.status_code == 200
    assert f"You are signed in as <strong>{ALICE}</strong>" in html
    assert "<code>https://linear.example/mcp</code> (as <code>Authorization: Bearer</code>)" in html
    assert "shows it to nobody" in html and "when you disconnect" in html
    assert f"matches <code>{PATTERN}</code>" in html
    assert 'type="password" id="token" name="token" required autocomplete="off"' in html


def test_pasting_a_token_stores_it_sealed_audits_the_connection_and_goes_back_to_the_list(
    alice: Console, linear: Upstream, keys: str
) -> None:
    page = alice.post(connect_url("linear"), {"token": f"  {TOKEN}\n"})

    assert (page.status_code, page["Location"]) == (302, "/connect/")
    connection = Connection.objects.get()
    assert (connection.user.email, connection.upstream.name, connection.last_used_at) == (ALICE, "linear", None)
    assert TOKEN not in connection.sealed_credential
    assert json.loads(Fernet(keys.encode()).decrypt(connection.sealed_credential.encode())) == {"token": TOKEN}
    event = AuditEvent.objects.get(event=AuditKind.UPSTREAM_CONNECTED)
    assert (event.user.email, event.detail) == (ALICE, {"upstream": "linear", "replaced": False})


def test_pasting_again_replaces_the_token(alice: Console, linear: Upstream, keys: str) -> None:
    alice.post(connect_url("linear"), {"token": TOKEN})
    newer = "lin_api_" + "Z9y8" * 10
    page = alice.post(connect_url("linear"), {"token": newer})

    assert page.status_code == 302
    sealed = Connection.objects.get().sealed_credential
    assert json.loads(Fernet(keys.encode()).decrypt(sealed.encode())) == {"token": newer}
    replaced = AuditEvent.objects.filter(event=AuditKind.UPSTREAM_CONNECTED).order_by("pk").last()
    assert replaced is not None and replaced.detail == {"upstream": "linear", "replaced": True}


@pytest.mark.parametrize(
    ("pasted", "problem"),
    [
        ("", "Paste your token."),
        ("lin_api_short", f"That is not a linear token: a linear token matches {PATTERN}."),
        ("ghp_" + "x" * 36, f"That is not a linear token: a linear token matches {PATTERN}."),
        ("lin_api_ a1B2", "A token is one line of printable ASCII characters without spaces."),
        ("lin_api_\u00e9" + "a" * 39, "A token is one line of printable ASCII characters without spaces."),
        ("x" * 4097, "That is longer than a token can be here (4096 characters at most)."),
    ],
    ids=["empty", "too-short", "another-service", "space", "non-ascii", "too-long"],
)
def test_a_token_that_cannot_be_right_is_refused_with_a_400_page_and_nothing_is_stored(
    alice: Console, linear: Upstream, pasted: str, problem: str
) -> None:
    page = alice.post(connect_url("linear"), {"token": pasted})

    assert page.status_code == 400
    assert alert(page) == problem
    assert pasted.strip() not in page.content.decode() or not pasted.strip()
    assert not Connection.objects.exists()
    assert not AuditEvent.objects.filter(event=AuditKind.UPSTREAM_CONNECTED).exists()


def test_without_upstream_keys_nothing_is_stored_and_the_page_says_so(
    alice: Console, linear: Upstream, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.MCPGATE_UPSTREAM_KEYS = []
    page = alice.post(connect_url("linear"), {"token": TOKEN})

    assert page.status_code == 503
    assert alert(page) == (
        "mcpgate cannot store tokens right now; the people who run it have been told. Nothing was stored."
    )
    assert not Connection.objects.exists()
    assert "MCPGATE_UPSTREAM_KEYS is not set" in caplog.text and TOKEN not in caplog.text


@pytest.mark.parametrize("name", ["finance", "github", "nonexistent", "disabled"])
def test_an_upstream_that_is_not_the_persons_to_connect_is_the_same_404(
    alice: Console, linear: Upstream, name: str
) -> None:
    http_upstream("finance", credential=Credential.PERSON_TOKEN, groups=["finance"])
    http_upstream("github")
    http_upstream("disabled", credential=Credential.PERSON_TOKEN, enabled=False)

    for response in (
        alice.get(connect_url(name)),
        alice.post(connect_url(name), {"token": TOKEN}, form_page=connect_url("linear")),
        alice.post(reverse("connect_disconnect", args=[name]), {}, form_page=connect_url("linear")),
    ):
        assert response.status_code == 404
        assert "text/html" in response["Content-Type"]
    assert not Connection.objects.exists()


def test_disconnecting_forgets_only_this_persons_account_and_is_audited(alice: Console, linear: Upstream) -> None:
    alice.post(connect_url("linear"), {"token": TOKEN})
    bob = User.objects.create(username=BOB, email=BOB)
    connection_token_save(user=bob, upstream=linear, token="lin_api_" + "c3D4" * 10)

    page = alice.post(reverse("connect_disconnect", args=["linear"]), {}, form_page=connect_url("linear"))

    assert (page.status_code, page["Location"]) == (302, "/connect/")
    assert list(Connection.objects.values_list("user__email", flat=True)) == [BOB]
    event = AuditEvent.objects.get(event=AuditKind.UPSTREAM_DISCONNECTED)
    assert (event.user.email, event.detail) == (ALICE, {"upstream": "linear", "reason": "person"})
    assert rows(alice.get("/connect/")) == [("linear", "not connected")]


def test_disconnecting_what_is_not_connected_changes_nothing(alice: Console, linear: Upstream) -> None:
    page = alice.post(reverse("connect_disconnect", args=["linear"]), {}, form_page=connect_url("linear"))
    assert (page.status_code, page["Location"]) == (302, "/connect/")
    assert not AuditEvent.objects.filter(event=AuditKind.UPSTREAM_DISCONNECTED).exists()


def test_the_pages_need_a_signed_in_person(client: Any, linear: Upstream) -> None:
    for url in ("/connect/", connect_url("linear")):
        response = client.get(url, HTTP_HOST="127.0.0.1:8000")
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next=")


def test_a_post_without_the_forms_csrf_token_is_refused(alice: Console, linear: Upstream) -> None:
    response = alice.http.post(connect_url("linear"), {"token": TOKEN}, **alice.headers)
    assert response.status_code == 403
    assert not Connection.objects.exists()


def test_a_disconnect_is_a_post(alice: Console, linear: Upstream) -> None:
    assert alice.get(reverse("connect_disconnect", args=["linear"])).status_code == 405


def test_switching_an_upstream_back_to_shared_deletes_the_tokens_people_connected(linear: Upstream) -> None:
    connection_token_save(user=User.objects.create(username=ALICE, email=ALICE), upstream=linear, token=TOKEN)
    upstream_update(upstream=linear, credential=Credential.SHARED)
    assert not Connection.objects.exists()
    assert Upstream.objects.get().token_pattern == ""


# ---------------------------------------------------------------------------
# The console
# ---------------------------------------------------------------------------
def test_operators_see_who_connected_what_and_when_but_never_the_token(alice: Console, linear: Upstream) -> None:
    alice.post(connect_url("linear"), {"token": TOKEN})
    olivia = Console(OLIVIA)

    page = olivia.get(reverse("admin:gateway_connection_changelist"))
    change = olivia.get(reverse("admin:gateway_connection_change", args=[Connection.objects.get().pk]))

    assert page.status_code == 200 and ALICE in page.content.decode() and "linear" in page.content.decode()
    for shown in (page, change):
        html = shown.content.decode()
        assert TOKEN not in html and Connection.objects.get().sealed_credential not in html


def test_an_operator_revokes_a_connection(alice: Console, linear: Upstream) -> None:
    alice.post(connect_url("linear"), {"token": TOKEN})
    olivia = Console(OLIVIA)

    olivia.action("gateway_connection", "revoke", Connection.objects.get().pk)

    assert not Connection.objects.exists()
    event = AuditEvent.objects.get(event=AuditKind.UPSTREAM_DISCONNECTED)
    assert (event.user.email, event.detail) == (ALICE, {"upstream": "linear", "reason": "operator", "operator": OLIVIA})


def test_offboarding_forgets_the_persons_upstream_accounts_too(alice: Console, linear: Upstream) -> None:
    alice.post(connect_url("linear"), {"token": TOKEN})
    bob = User.objects.create(username=BOB, email=BOB)
    connection_token_save(user=bob, upstream=linear, token=TOKEN)
    olivia = Console(OLIVIA)

    page = olivia.action("user", "revoke_all_tokens", person(ALICE).pk)

    assert page.status_code == 302
    assert list(Connection.objects.values_list("user__email", flat=True)) == [BOB]
    event = AuditEvent.objects.get(event=AuditKind.UPSTREAM_DISCONNECTED)
    assert (event.user.email, event.detail) == (
        ALICE,
        {"upstream": "linear", "reason": "offboarded", "operator": OLIVIA},
    )


def test_the_consent_page_points_to_connect_when_an_upstream_acts_as_the_person(
    linear: Upstream, public_client: Any, flow: Flow
) -> None:
    page = flow.authorize(authorize_params(public_client.client_id, PKCE.make()))

    html = page.content.decode()
    assert page.status_code == 200
    assert "Some tools act as your own account at another service (linear)." in html
    assert 'href="/connect/">https://mcp.example.com/connect/</a>' in html


def test_the_consent_page_says_nothing_of_connect_without_such_an_upstream(public_client: Any, flow: Flow) -> None:
    http_upstream("github")
    page = flow.authorize(authorize_params(public_client.client_id, PKCE.make()))
    assert page.status_code == 200 and "/connect/" not in page.content.decode()
