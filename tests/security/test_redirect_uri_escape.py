"""RFC 9700 §4.1 and §2.1: a redirect URI that passes the allowlist must land where the allowlist says.

The allowlist has prefix entries (ChatGPT's per-connector callbacks under
``https://chatgpt.com/connector/oauth/``, Cursor's ``cursor://anysphere.cursor-mcp/``). A browser
resolves dot segments (RFC 3986 §5.2.4; the WHATWG URL parser also reads ``%2e`` as a dot,
``\\`` as ``/`` and drops tabs and newlines), and servers decode ``%2f``, ``..;`` and double
encodings, so ``https://chatgpt.com/connector/oauth/../../x`` is ``https://chatgpt.com/x``: a
string prefix is no boundary. Each spelling below is refused at registration, by an operator's
client and allowlist entry alike; and a clean registered URI cannot be stretched at
``/oauth/authorize`` by presenting a variant of it (DOT matches redirect URIs exactly).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.test import Client as HttpClient
from hypothesis import given
from hypothesis import strategies as st
from oauth2_provider.models import get_grant_model

from audit.models import AuditEvent, AuditKind
from oauth_ext.models import Client, RedirectAllowlistEntry
from oauth_ext.redirects import KNOWN_CLIENT_CALLBACKS, redirect_uri_problem
from tests.conftest import (
    INTERNAL,
    PKCE,
    Flow,
    authorize_params,
    oauth_error,
    proxy_headers,
    register,
)
from tests.personas import ALICE, OLIVIA

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    """Rate limits and audit allowances are counted in the cache: no test may see another's."""
    cache.clear()
    yield
    cache.clear()


CHATGPT = "https://chatgpt.com/connector/oauth/"
CURSOR = "cursor://anysphere.cursor-mcp/"

ESCAPES = [
    # Dot segments, as RFC 3986 §5.2.4 resolves them.
    CHATGPT + "../../x",
    CHATGPT + "..",
    CHATGPT + "./../x",
    CHATGPT + "abc/../../../x",
    CHATGPT + "abc/./../..",
    # Percent-encoded dots: the WHATWG URL standard treats %2e and %2E as "." in a path segment.
    CHATGPT + "%2e%2e/%2e%2e/x",
    CHATGPT + "%2E%2E/%2E%2E/x",
    CHATGPT + ".%2e/.%2E/x",
    CHATGPT + "%2e./x",
    CHATGPT + "%2e/../x",
    # Encoded separators and double encodings, which servers behind the browser may decode.
    CHATGPT + "..%2f..%2fx",
    CHATGPT + "..%2F..%2Fx",
    CHATGPT + "..%5c..%5cx",
    CHATGPT + "%252e%252e/x",
    # Backslashes: "\" is "/" to a browser in an http(s) URL.
    CHATGPT + "..\\..\\x",
    CHATGPT + "abc\\..\\..\\x",
    "https://chatgpt.com\\connector/oauth/x",
    # Path parameters that Java servers strip before resolving (..;/ is ../).
    CHATGPT + "..;/..;/x",
    CHATGPT + "..;x=1/..;/x",
    CHATGPT + "..%3b/..%3B/x",
    # Characters a browser drops or a server folds: tab, newline, NUL, full-width dots.
    CHATGPT + ".\t./x",
    CHATGPT + ".\n./x",
    CHATGPT + "x\x00",
    CHATGPT + "\uff0e\uff0e/x",
    # Empty segments, which some servers collapse.
    CHATGPT + "/x",
    # Authority tricks: another host, credentials, an encoded host, an odd port.
    "https://chatgpt.com.evil.test/connector/oauth/x",
    "https://chatgpt.com:443@evil.test/connector/oauth/x",
    "https://chatgpt.com%2f@evil.test/connector/oauth/x",
    "https://chatgpt%2ecom/connector/oauth/x",
    "https://chatgpt.com:8443/connector/oauth/x",
    "https://chatgpt.com:/connector/oauth/x",
    "https://chatgpt.com./connector/oauth/x",
    # The same with Cursor's app scheme.
    CURSOR + "../x",
    CURSOR + "%2e%2e/x",
    CURSOR + "..\\x",
    "cursor://anysphere.cursor-mcp.evil.test/x",
    "cursor://evil@anysphere.cursor-mcp/x",
    # Exact entries reached through a detour.
    "https://claude.ai/api/mcp/x/../auth_callback",
    "https://claude.ai/api/mcp/%2e/auth_callback",
]

LEGITIMATE = [
    *(uri + "abc123" if match == "prefix" else uri for uri, match, _ in KNOWN_CLIENT_CALLBACKS),
    CHATGPT + "g-1a2b3c/callback",
    CURSOR + "oauth/callback",
    CHATGPT + "abc?connector=1",
    "https://CLAUDE.ai/api/mcp/auth_callback",  # host names are case-insensitive (RFC 3986 §3.2.2)
    "https://claude.ai:443/api/mcp/auth_callback",  # the default port is the same port (RFC 3986 §6.2.3)
    "http://127.0.0.1:33418/callback",
    "http://[::1]:8080/callback",
    "http://localhost/callback",
]


# What escapes are made of, for the property test: it joins up to ten of these.
TAIL_PIECES = ["..", ".", "%2e", "%2E", "/", "\\", "%2f", "%5c", "%25", ";", "?", "@", "\t", "\n", "abc", "\uff0e"]


def browser_path(uri: str) -> str:
    """The path a browser navigates to for an http(s) ``uri`` (WHATWG URL standard, path state):
    tabs and newlines dropped, "\\" read as "/", "%2e" as ".", dot segments resolved."""
    uri = uri.strip("\x00 ").replace("\t", "").replace("\n", "").replace("\r", "").replace("\\", "/")
    path = "/" + uri.split("://", 1)[1].split("?")[0].split("/", 1)[-1]
    out: list[str] = []
    segments = path.split("/")[1:]
    for i, segment in enumerate(segments):
        dots = segment.lower().replace("%2e", ".")
        last = i == len(segments) - 1
        if dots == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        elif dots == ".":
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


def metadata(redirect_uri: str) -> dict[str, Any]:
    return {
        "client_name": "Connector",
        "redirect_uris": [redirect_uri],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    }


# ---------------------------------------------------------------------------
# Registration (RFC 7591 §3.2.2: invalid_redirect_uri)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("redirect_uri", ESCAPES)
def test_an_escaping_redirect_uri_is_refused_at_registration(http: HttpClient, redirect_uri: str) -> None:
    response = register(http, metadata(redirect_uri))

    assert response.status_code == 400, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == "invalid_redirect_uri"
    assert body["error_description"].startswith(repr(redirect_uri)), body
    assert not Client.objects.exists()
    assert AuditEvent.objects.get(event=AuditKind.REGISTER_REFUSED).detail == {"error": "invalid_redirect_uri"}


def test_the_dot_segment_escape_names_what_is_wrong(http: HttpClient) -> None:
    response = register(http, metadata(CHATGPT + "../../x"))

    assert response.json() == oauth_error(
        "invalid_redirect_uri",
        "'https://chatgpt.com/connector/oauth/../../x' has a '.' or '..' path segment (in any spelling), "
        "which a browser resolves to another path (RFC 3986 §5.2.4).",
    )


def test_a_backslash_is_refused_wherever_it_is(http: HttpClient) -> None:
    response = register(http, metadata("http://127.0.0.1:33418/a\\b"))

    assert response.json() == oauth_error(
        "invalid_redirect_uri",
        "'http://127.0.0.1:33418/a\\\\b' contains characters a URI cannot have (RFC 3986 §2): "
        "spaces, controls, backslashes or non-ASCII.",
    )
    assert not Client.objects.exists()


@pytest.mark.parametrize("redirect_uri", LEGITIMATE)
def test_the_callbacks_of_known_clients_still_register(http: HttpClient, redirect_uri: str) -> None:
    response = register(http, metadata(redirect_uri))

    assert response.status_code == 201, response.content
    assert response.json()["redirect_uris"] == [redirect_uri]
    assert Client.objects.get().redirect_uris == redirect_uri


@given(tail=st.lists(st.sampled_from(TAIL_PIECES), max_size=10).map("".join))
def test_whatever_follows_the_prefix_an_accepted_callback_stays_under_it(tail: str) -> None:
    """Property: any URI the policy accepts under the ChatGPT prefix is, once a browser has
    resolved it, still under the prefix."""
    uri = CHATGPT + tail
    if redirect_uri_problem(uri) is None:
        assert browser_path(uri).startswith("/connector/oauth/"), uri


def test_the_browser_model_of_this_file_resolves_the_escapes() -> None:
    """The property above is only as good as ``browser_path``: it must see the escapes."""
    assert browser_path(CHATGPT + "../../x") == "/x"
    assert browser_path(CHATGPT + "%2e%2E/.%2e/x") == "/x"
    assert browser_path(CHATGPT + "..\\..\\x") == "/x"
    assert browser_path(CHATGPT + ".\t./x") == "/connector/x"
    assert browser_path(CHATGPT + "abc/./def") == "/connector/oauth/abc/def"


def test_a_prefix_matches_only_whole_path_segments(http: HttpClient) -> None:
    """``.../connector/oauthx`` shares the prefix's characters but not its last segment."""
    response = register(http, metadata("https://chatgpt.com/connector/oauthx/y"))

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_redirect_uri"
    assert not Client.objects.exists()


# ---------------------------------------------------------------------------
# Operators: clients they make and allowlist entries they add
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("redirect_uri", [CHATGPT + "../../x", CHATGPT + "%2e%2e/x", CURSOR + "..\\x"])
def test_an_operator_made_client_with_an_escaping_redirect_uri_is_refused(redirect_uri: str) -> None:
    client = Client(
        name="Connector",
        client_type=Client.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Client.GRANT_AUTHORIZATION_CODE,
        redirect_uris=redirect_uri,
        registration_source=Client.RegistrationSource.MANUAL,
    )

    with pytest.raises(ValidationError) as refused:
        client.full_clean()

    assert list(refused.value.message_dict) == ["redirect_uris"]
    assert refused.value.message_dict["redirect_uris"][0].startswith(repr(redirect_uri))
    assert not Client.objects.exists()


@pytest.mark.parametrize(
    ("uri", "match", "message"),
    [
        (
            "https://chatgpt.com/connector/../",
            "prefix",
            "'https://chatgpt.com/connector/../' has a '.' or '..' path segment (in any spelling), "
            "which a browser resolves to another path (RFC 3986 §5.2.4).",
        ),
        (
            "https://chatgpt.com/connector/%2e%2e/",
            "prefix",
            "'https://chatgpt.com/connector/%2e%2e/' has a '.' or '..' path segment (in any spelling), "
            "which a browser resolves to another path (RFC 3986 §5.2.4).",
        ),
        (
            "https://chatgpt.com\\connector/",
            "prefix",
            "'https://chatgpt.com\\\\connector/' contains characters a URI cannot have (RFC 3986 §2): "
            "spaces, controls, backslashes or non-ASCII.",
        ),
        ("https://user@chatgpt.com/connector/", "prefix", "'https://user@chatgpt.com/connector/' carries credentials."),
        (
            "https://chatgpt.com/connector/?next=/",
            "prefix",
            "A prefix entry cannot have a query; it matches paths only.",
        ),
        (
            "cursor://",
            "prefix",
            "A prefix entry needs a path ending with '/' (e.g. cursor://app.example/), so it matches whole "
            "path segments of one host.",
        ),
        (
            "https://*.chatgpt.com/",
            "prefix",
            "'https://*.chatgpt.com/' has an invalid host: only letters, digits, '-' and '.', or an IP address.",
        ),
        (
            "javascript://chatgpt.com/",
            "prefix",
            "'javascript://chatgpt.com/': javascript, data, file, blob, about, vbscript and ws(s) URIs cannot "
            "receive an authorization response.",
        ),
        ("https://chatgpt.com:99999/cb", "exact", "'https://chatgpt.com:99999/cb' has an invalid port."),
        ("https://chatgpt.com/cb#x", "exact", "A redirect URI cannot have a fragment."),
        (
            "https://chatgpt.com/connector",
            "prefix",
            "A prefix entry must end with '/' so it cannot match another host or path.",
        ),
    ],
)
def test_an_unsafe_allowlist_entry_is_refused(uri: str, match: str, message: str) -> None:
    entry = RedirectAllowlistEntry(uri=uri, match=match)

    with pytest.raises(ValidationError) as refused:
        entry.full_clean()

    assert refused.value.message_dict == {"uri": [message]}


def test_the_seeded_allowlist_entries_are_clean() -> None:
    for entry in RedirectAllowlistEntry.objects.all():
        entry.full_clean()


def test_the_console_refuses_an_escaping_allowlist_entry(settings: Any) -> None:
    settings.MCPGATE_OPERATOR_EMAILS = [OLIVIA]
    console = HttpClient()
    headers = {"HTTP_HOST": INTERNAL, **proxy_headers(OLIVIA)}
    before = set(RedirectAllowlistEntry.objects.values_list("uri", flat=True))

    page = console.post(
        "/admin/oauth_ext/redirectallowlistentry/add/",
        {"uri": "https://chatgpt.com/connector/oauth/../../", "match": "prefix", "note": "sneaky"},
        **headers,
    )

    assert page.status_code == 200  # the form again, with the error
    assert "has a &#x27;.&#x27; or &#x27;..&#x27; path segment" in page.content.decode()
    assert set(RedirectAllowlistEntry.objects.values_list("uri", flat=True)) == before


def test_a_prefix_entry_added_by_an_operator_is_matched_on_segments(http: HttpClient) -> None:
    RedirectAllowlistEntry.objects.create(uri="https://app.example.net/oauth/", match="prefix")

    assert register(http, metadata("https://app.example.net/oauth/cb")).status_code == 201
    for escape in ("https://app.example.net/oauth/../admin", "https://app.example.net/oauthcb"):
        response = register(http, metadata(escape))
        assert response.status_code == 400, escape
        assert response.json()["error"] == "invalid_redirect_uri"
    assert Client.objects.count() == 1


# ---------------------------------------------------------------------------
# /oauth/authorize: a registered URI cannot be stretched by presenting a variant
# ---------------------------------------------------------------------------
def refused_at_authorize(flow: Flow, client: Client, redirect_uri: str) -> None:
    """The person sees an error page; nothing goes to ``redirect_uri`` and no code exists."""
    response = flow.authorize(authorize_params(client.client_id, PKCE.make(), redirect_uri=redirect_uri))
    assert response.status_code == 400, (redirect_uri, response.status_code)
    assert not response.has_header("Location")
    html = response.content.decode()
    assert "This sign-in request cannot continue" in html
    # oauthlib says "Invalid" for what is no absolute URI to it, "Mismatching" for any other difference.
    assert "Mismatching redirect URI." in html or "Invalid redirect URI." in html
    assert not get_grant_model().objects.exists()


@pytest.mark.parametrize(
    "presented",
    [
        CHATGPT + "abc/../../../x",
        CHATGPT + "abc/%2e%2e/%2e%2e/%2e%2e/x",
        CHATGPT + "abc/..%2f..%2f..%2fx",
        CHATGPT + "abc\\..\\..\\..\\x",
        CHATGPT + "abc/..",
        CHATGPT + "abc/.",
        CHATGPT + "./abc",
        CHATGPT + "abc/",
        "https://chatgpt.com:443@evil.test/connector/oauth/abc",
        "https://chatgpt.com/connector/oauth/abc?redirect=https://evil.test",
    ],
)
def test_a_variant_of_a_registered_redirect_uri_is_refused_at_authorize(
    flow: Flow, make_client: Any, presented: str
) -> None:
    client = make_client(CHATGPT + "abc")

    refused_at_authorize(flow, client, presented)


@pytest.mark.parametrize(
    "presented",
    [
        "http://127.0.0.1:40000/callback/../../x",
        "http://127.0.0.1:40000/callback/%2e%2e/x",
        "http://127.0.0.1:40000/x/../callback",
        "http://127.0.0.1:40000@evil.test/callback",
        "http://localhost.evil.test:40000/callback",
    ],
)
def test_a_loopback_variant_with_another_path_is_refused_at_authorize(
    flow: Flow, make_client: Any, presented: str
) -> None:
    """RFC 8252 §7.3 lets the port vary, never the path or the host."""
    client = make_client("http://127.0.0.1:33418/callback")

    refused_at_authorize(flow, client, presented)


def test_a_client_registered_with_an_escaping_uri_before_the_fix_gets_no_code(flow: Flow) -> None:
    """Rows written before the policy was hardened are checked again when they are used."""
    escaping = CHATGPT + "../../x"
    client = Client.objects.create(
        name="Old connector",
        client_type=Client.CLIENT_PUBLIC,
        authorization_grant_type=Client.GRANT_AUTHORIZATION_CODE,
        redirect_uris=escaping,
        token_endpoint_auth_method="none",
        registration_source=Client.RegistrationSource.DCR,
        client_secret="",
    )

    refused_at_authorize(flow, client, escaping)


def test_an_escaping_redirect_uri_never_reaches_the_consent_page(http: HttpClient) -> None:
    """The whole attack: register the escape, send Alice to authorize; she is never asked."""
    registered = register(http, metadata(CHATGPT + "../../x"))
    assert registered.status_code == 400
    client_id = json.loads(registered.content).get("client_id", "unregistered")

    query = urlencode(authorize_params(client_id, PKCE.make(), redirect_uri=CHATGPT + "../../x"))
    page = http.get("/oauth/authorize?" + query, HTTP_HOST="mcp.example.com", **proxy_headers(ALICE))

    assert page.status_code == 400
    assert not page.has_header("Location")
    assert not get_grant_model().objects.exists()
