"""/connect/ (issue 12, per-person token): people connect and disconnect their own accounts; operators revoke them."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from cryptography.fernet import Fernet
from django.urls import reverse

from audit.models import AuditEvent, AuditKind
from gateway import connections as connections_module
from gateway import upstream_oauth
from gateway.connections import connection_token_save
from gateway.models import Connection, Credential, Transport, Upstream
from gateway.services import OAuthSettings, Target, UpstreamInvalid, upstream_create, upstream_update
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
    assert json.loads(Fernet(keys.encode()).decrypt(connection.sealed_credential.encode())) == {"access_token": TOKEN}
    event = AuditEvent.objects.get(event=AuditKind.UPSTREAM_CONNECTED)
    assert (event.user.email, event.detail) == (ALICE, {"upstream": "linear", "replaced": False})


def test_pasting_again_replaces_the_token(alice: Console, linear: Upstream, keys: str) -> None:
    alice.post(connect_url("linear"), {"token": TOKEN})
    newer = "lin_api_" + "Z9y8" * 10
    page = alice.post(connect_url("linear"), {"token": newer})

    assert page.status_code == 302
    sealed = Connection.objects.get().sealed_credential
    assert json.loads(Fernet(keys.encode()).decrypt(sealed.encode())) == {"access_token": newer}
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


# ---------------------------------------------------------------------------
# Per-person OAuth: the start and the callback (gateway.connections, gateway.upstream_oauth)
# ---------------------------------------------------------------------------
class TokenEndpoint(BaseHTTPRequestHandler):
    """A stand-in for an upstream's token endpoint, answering as ``behaviour`` says (set per test)."""

    behaviour = "ok"
    received: list[dict[str, list[str]]] = []

    def do_POST(self) -> None:
        form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        TokenEndpoint.received.append({**form, "authorization": [self.headers.get("Authorization", "")]})
        if self.behaviour == "slow":
            time.sleep(1.0)
        status, body = {
            "ok": (
                200,
                json.dumps(
                    {
                        "access_token": "upstream-access-1",
                        "token_type": "bearer",
                        "expires_in": 3600,
                        "refresh_token": "upstream-refresh-1",
                    }
                ),
            ),
            "garbage": (200, "<html>welcome</html>"),
            "refuse": (400, json.dumps({"error": "invalid_grant", "error_description": "code expired"})),
            "broken": (500, "oops"),
            "slow": (200, "{}"),
        }[self.behaviour]
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())
        except BrokenPipeError:
            pass  # "slow": mcpgate stopped waiting

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def token_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), TokenEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    TokenEndpoint.behaviour, TokenEndpoint.received = "ok", []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/token"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def tickets(token_endpoint: str) -> Upstream:
    """A per-person OAuth upstream whose authorization server is at tickets.example, its token endpoint here."""
    upstream = http_upstream(
        "tickets",
        credential=Credential.PERSON_OAUTH,
        oauth=OAuthSettings(
            client_id="mcpgate",
            client_secret="tickets-secret",
            authorization_url="https://tickets.example/authorize",
            token_url=token_endpoint,
            issuer="https://tickets.example",
            scopes=("tickets", "read"),
        ),
    )
    return upstream


def start(browser: Console) -> dict[str, str]:
    """Press Continue: the authorization request's parameters (the browser would go there)."""
    response = browser.post(connect_url("tickets"), {})
    assert response.status_code == 302, response.content[:500]
    location = urlsplit(response["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == "https://tickets.example/authorize"
    return {key: values[0] for key, values in parse_qs(location.query).items()}


def callback(browser: Console, **query: str) -> Any:
    return browser.get(reverse("connect_callback", args=["tickets"]) + "?" + urlencode(query))


NOT_STARTED = (
    "This answer from tickets's sign-in does not match a connection you started here, or it was used already, "
    "or it is too old. Nothing was stored; start again."
)


def test_continue_sends_the_person_to_sign_in_with_pkce_a_fresh_state_and_the_upstream_as_resource(
    alice: Console, tickets: Upstream
) -> None:
    page = alice.get(connect_url("tickets"))
    assert "form-action 'self' https://tickets.example" in page["Content-Security-Policy"]
    assert "Continue to tickets" in page.content.decode()

    first, second = start(alice), start(alice)

    assert {k: v for k, v in first.items() if k not in ("state", "code_challenge")} == {
        "response_type": "code",
        "client_id": "mcpgate",
        "redirect_uri": "http://127.0.0.1:8000/connect/tickets/callback",
        "code_challenge_method": "S256",
        "resource": "https://tickets.example/mcp",
        "scope": "tickets read",
    }
    assert first["state"] != second["state"] and len(first["state"]) >= 43
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", first["code_challenge"])


def test_the_callback_exchanges_the_code_with_the_verifier_and_stores_the_tokens_sealed(
    alice: Console, tickets: Upstream, keys: str
) -> None:
    state = start(alice)["state"]

    response = callback(alice, code="the-code", state=state, iss="https://tickets.example")

    assert (response.status_code, response["Location"]) == (302, "/connect/")
    (sent,) = TokenEndpoint.received
    assert {k: v[0] for k, v in sent.items() if k != "code_verifier"} == {
        "grant_type": "authorization_code",
        "code": "the-code",
        "redirect_uri": "http://127.0.0.1:8000/connect/tickets/callback",
        "resource": "https://tickets.example/mcp",
        "client_id": "mcpgate",
        "authorization": "Basic " + base64.b64encode(b"mcpgate:tickets-secret").decode(),
    }
    connection = Connection.objects.get()
    assert json.loads(Fernet(keys.encode()).decrypt(connection.sealed_credential.encode())) == {
        "access_token": "upstream-access-1",
        "refresh_token": "upstream-refresh-1",
    }
    assert connection.expires_at is not None


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"code": "c", "state": "never-issued"}, NOT_STARTED),
        ({"code": "c"}, NOT_STARTED),
        (
            {"error": "access_denied", "state": "STATE"},
            "tickets did not connect your account (access_denied). Nothing was stored.",
        ),
        ({"state": "STATE"}, "tickets's sign-in answered without an authorization code. Nothing was stored."),
        (
            {"code": "c", "state": "STATE", "iss": "https://evil.example"},
            "This answer did not come from tickets's sign-in. Nothing was stored; start again.",
        ),
    ],
    ids=["unknown-state", "no-state", "error", "no-code", "other-issuer"],
)
def test_a_callback_that_is_not_an_answer_to_this_persons_request_is_a_400_page_and_nothing_is_stored(
    alice: Console, tickets: Upstream, query: dict[str, str], message: str
) -> None:
    state = start(alice)["state"]
    response = callback(alice, **{k: (state if v == "STATE" else v) for k, v in query.items()})

    assert response.status_code == 400
    assert alert(response) == message
    assert not Connection.objects.exists() and TokenEndpoint.received == []


def test_a_replayed_callback_is_refused(alice: Console, tickets: Upstream) -> None:
    state = start(alice)["state"]
    assert callback(alice, code="c", state=state).status_code == 302

    replayed = callback(alice, code="c", state=state)

    assert replayed.status_code == 400 and alert(replayed) == NOT_STARTED
    assert len(TokenEndpoint.received) == 1


def test_another_persons_state_is_refused_and_leaves_theirs_usable(alice: Console, tickets: Upstream) -> None:
    state = start(alice)["state"]
    bob = Console(BOB, "eng")

    stolen = callback(bob, code="c", state=state)

    assert stolen.status_code == 400 and alert(stolen) == NOT_STARTED
    assert not Connection.objects.exists()
    assert callback(alice, code="c", state=state).status_code == 302
    assert list(Connection.objects.values_list("user__email", flat=True)) == [ALICE]


def test_a_state_older_than_ten_minutes_is_refused(
    alice: Console, tickets: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = start(alice)["state"]
    started = time.time()
    monkeypatch.setattr(connections_module.time, "time", lambda: started + connections_module.PENDING_SECONDS + 1)

    response = callback(alice, code="c", state=state)

    assert response.status_code == 400 and alert(response) == NOT_STARTED


@pytest.mark.parametrize(
    ("behaviour", "status", "said"),
    [
        ("garbage", 502, "answered with something that is not a bearer token"),
        ("broken", 502, "answered HTTP 500"),
        ("refuse", 400, "refused: invalid_grant"),
        ("slow", 502, "did not answer within 0.3 seconds"),
    ],
)
def test_a_token_endpoint_that_does_not_give_tokens_is_a_clear_page_and_nothing_is_stored(
    alice: Console,
    tickets: Upstream,
    token_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    behaviour: str,
    status: int,
    said: str,
) -> None:
    TokenEndpoint.behaviour = behaviour
    monkeypatch.setattr(upstream_oauth, "TIMEOUT", 0.3)
    state = start(alice)["state"]

    response = callback(alice, code="c", state=state)

    origin = token_endpoint.removesuffix("/token")
    assert response.status_code == status
    assert alert(response) == f"tickets's sign-in did not give mcpgate access: {origin} {said}. Nothing was stored."
    assert not Connection.objects.exists()
    assert "tickets-secret" not in response.content.decode()


def test_a_token_upstream_has_no_callback(alice: Console, linear: Upstream) -> None:
    assert callback_for(alice, "linear").status_code == 404


def callback_for(browser: Console, name: str) -> Any:
    return browser.get(reverse("connect_callback", args=[name]) + "?code=c&state=s")


def test_changing_whose_account_forgets_the_connections_and_what_the_old_kind_needed(
    tickets: Upstream, linear: Upstream
) -> None:
    alice = User.objects.create(username=ALICE, email=ALICE)
    connection_token_save(user=alice, upstream=linear, token=TOKEN)

    refused = pytest.raises(UpstreamInvalid, match="needs --client-id and the authorization server's URLs")
    with refused:
        upstream_update(upstream=linear, credential=Credential.PERSON_OAUTH)
    assert Connection.objects.count() == 1  # refused: nothing changed

    upstream_update(upstream=tickets, credential=Credential.SHARED)
    shared = Upstream.objects.get(name="tickets")
    assert (shared.oauth_client_id, shared.authorization_url, shared.sealed_oauth_client_secret) == ("", "", "")

    upstream_update(
        upstream=linear,
        credential=Credential.PERSON_OAUTH,
        oauth=OAuthSettings("mcpgate", "https://l.example/authorize", "https://l.example/token"),
    )
    assert not Connection.objects.exists()
