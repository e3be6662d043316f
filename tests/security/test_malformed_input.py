"""Malformed input anyone can send gets a spec-shaped 400, never a 500, on SQLite and PostgreSQL alike.

Deeply nested JSON (Python's parser raises RecursionError), JSON values of the wrong type,
overlong values, and NUL characters (PostgreSQL text cannot hold one, so the query raises)
at the registration, management, token, revocation and authorization endpoints.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client as HttpClient
from oauth2_provider.models import get_access_token_model, get_grant_model

from oauth_ext.models import Client, Consent
from oauth_ext.templatetags.mcpgate import disabled_client
from tests.conftest import (
    ALICE,
    LOOPBACK_REDIRECT,
    PKCE,
    PUBLIC,
    PUBLIC_BASE,
    Flow,
    authorize_params,
    basic_auth,
    hidden_inputs,
    oauth_error,
    proxy_headers,
    register,
)

pytestmark = pytest.mark.django_db

PUBLIC_METADATA = {
    "client_name": "Claude Code",
    "redirect_uris": [LOOPBACK_REDIRECT],
    "token_endpoint_auth_method": "none",
    "software_id": "claude-code",
    "software_version": "2.1.0",
}
NUL = "\x00"
NUL_REFUSED = oauth_error("invalid_request", "The request contains a NUL character.")
TOO_DEEP = oauth_error("invalid_client_metadata", "Request body is nested too deeply.")
DEPTH = 100_000


def refused(response: Any, error: dict[str, str]) -> None:
    assert response.status_code == 400, response.content
    assert response["Cache-Control"] == "no-store"
    assert response.json() == error


def registered(http: HttpClient) -> dict[str, Any]:
    response = register(http, PUBLIC_METADATA)
    assert response.status_code == 201, response.content
    return dict(response.json())


def put(http: HttpClient, registration: dict[str, Any], body: str) -> Any:
    return http.put(
        f"/oauth/register/{registration['client_id']}",
        body,
        content_type="application/json",
        HTTP_HOST=PUBLIC,
        HTTP_AUTHORIZATION=f"Bearer {registration['registration_access_token']}",
    )


def unchanged(registration: dict[str, Any]) -> None:
    client = Client.objects.get(client_id=registration["client_id"])
    assert (client.name, client.redirect_uris, client.software_id) == ("Claude Code", LOOPBACK_REDIRECT, "claude-code")


# ---------------------------------------------------------------------------
# Deeply nested JSON
# ---------------------------------------------------------------------------
NESTED_BODIES = {
    "array": "[" * DEPTH + "]" * DEPTH,
    "object": '{"a":' * DEPTH + "1" + "}" * DEPTH,
    "field": '{"client_name": ' + "[" * DEPTH + "]" * DEPTH + ', "redirect_uris": ["http://127.0.0.1/cb"]}',
}


@pytest.mark.parametrize("shape", sorted(NESTED_BODIES))
def test_deeply_nested_json_is_refused_at_registration(http: HttpClient, shape: str) -> None:
    refused(register(http, NESTED_BODIES[shape]), TOO_DEEP)
    assert not Client.objects.exists()


@pytest.mark.parametrize("shape", sorted(NESTED_BODIES))
def test_deeply_nested_json_is_refused_at_update(http: HttpClient, shape: str) -> None:
    registration = registered(http)
    refused(put(http, registration, NESTED_BODIES[shape]), TOO_DEEP)
    unchanged(registration)


def test_a_body_that_is_not_json_is_refused_at_update(http: HttpClient) -> None:
    registration = registered(http)
    refused(
        put(http, registration, "{not json"), oauth_error("invalid_client_metadata", "Request body must be valid JSON")
    )
    refused(put(http, registration, "[]"), oauth_error("invalid_client_metadata", "Request body must be a JSON object"))
    unchanged(registration)


# ---------------------------------------------------------------------------
# JSON values of the wrong type, overlong values
# ---------------------------------------------------------------------------
WRONG_TYPES = [
    ("client_name", None, "client_name must be a string."),
    ("client_name", ["x"], "client_name must be a string."),
    ("client_name", 5, "client_name must be a string."),
    ("client_name", {"en": "x"}, "client_name must be a string."),
    ("software_id", 5, "software_id must be a string."),
    ("software_version", 2.1, "software_version must be a string."),
    ("client_uri", ["https://example.com"], "client_uri must be a string."),
    ("scope", 5, "scope must be a string."),
    ("token_endpoint_auth_method", ["none"], "token_endpoint_auth_method must be a string."),
    ("application_type", True, "application_type must be a string."),
    ("redirect_uris", "http://127.0.0.1/cb", "redirect_uris must be an array"),
    ("redirect_uris", [["http://127.0.0.1/cb"]], "Each redirect_uri must be a string"),
    ("grant_types", "authorization_code", "grant_types must be an array"),
    ("grant_types", [None], "Each grant_type must be a string"),
    ("response_types", {"code": True}, "response_types must be an array of strings."),
    ("contacts", ALICE, "contacts must be an array of strings."),
    ("jwks", "keys", "jwks must be an object."),
]


@pytest.mark.parametrize(("field", "value", "description"), WRONG_TYPES)
def test_a_value_of_the_wrong_type_is_refused_at_registration(
    http: HttpClient, field: str, value: Any, description: str
) -> None:
    refused(register(http, {**PUBLIC_METADATA, field: value}), oauth_error("invalid_client_metadata", description))
    assert not Client.objects.exists()


@pytest.mark.parametrize(("field", "value", "description"), WRONG_TYPES)
def test_a_value_of_the_wrong_type_is_refused_at_update(
    http: HttpClient, field: str, value: Any, description: str
) -> None:
    registration = registered(http)
    refused(
        put(http, registration, json.dumps({**PUBLIC_METADATA, field: value})),
        oauth_error("invalid_client_metadata", description),
    )
    unchanged(registration)


def test_null_for_metadata_this_server_does_not_use_means_not_given(http: HttpClient) -> None:
    """RFC 7592 §2.2 equates an omitted field with null; only the fields this server reads must be typed."""
    ignored = {"client_uri": None, "logo_uri": None, "scope": None, "contacts": None, "jwks": None}
    response = register(http, {**PUBLIC_METADATA, **ignored})
    assert response.status_code == 201, response.content


@pytest.mark.parametrize(
    ("field", "length", "limit"),
    [("client_name", 10_000, 255), ("software_id", 256, 255), ("software_version", 65, 64)],
)
def test_an_overlong_value_is_refused(http: HttpClient, field: str, length: int, limit: int) -> None:
    response = register(http, {**PUBLIC_METADATA, field: "x" * length})
    refused(response, oauth_error("invalid_client_metadata", f"{field} must be at most {limit} characters."))
    assert not Client.objects.exists()
    registration = registered(http)
    refused(put(http, registration, json.dumps({**PUBLIC_METADATA, field: "x" * length})), response.json())
    unchanged(registration)


def test_more_redirect_uris_than_any_client_needs_are_refused(http: HttpClient) -> None:
    """Each is checked against the allowlist: a body full of them must not cost a query each."""
    uris = [f"https://app{n}.example/cb" for n in range(21)]
    response = register(http, {**PUBLIC_METADATA, "redirect_uris": uris})
    refused(response, oauth_error("invalid_client_metadata", "At most 20 redirect_uris can be registered."))
    assert not Client.objects.exists()


# ---------------------------------------------------------------------------
# NUL characters at registration and update
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field", ["client_name", "software_id", "software_version", "client_uri", "application_type", "scope"]
)
def test_a_nul_character_in_a_registration_field_is_refused(http: HttpClient, field: str) -> None:
    error = oauth_error("invalid_client_metadata", f"{field} must not contain a NUL character.")
    refused(register(http, {**PUBLIC_METADATA, field: f"a{NUL}b"}), error)
    assert not Client.objects.exists()
    registration = registered(http)
    refused(put(http, registration, json.dumps({**PUBLIC_METADATA, field: f"a{NUL}b"})), error)
    unchanged(registration)


@pytest.mark.parametrize("field", ["contacts", "grant_types", "response_types"])
def test_a_nul_character_in_a_list_field_is_refused(http: HttpClient, field: str) -> None:
    response = register(http, {**PUBLIC_METADATA, field: [f"a{NUL}b"]})
    refused(response, oauth_error("invalid_client_metadata", f"{field} must not contain a NUL character."))
    assert not Client.objects.exists()


def test_a_nul_character_in_a_redirect_uri_is_refused(http: HttpClient) -> None:
    uri = f"http://127.0.0.1:33418/callback{NUL}"
    error = oauth_error("invalid_redirect_uri", f"{uri!r} contains a NUL character.")
    refused(register(http, {**PUBLIC_METADATA, "redirect_uris": [uri]}), error)
    assert not Client.objects.exists()
    registration = registered(http)
    refused(put(http, registration, json.dumps({**PUBLIC_METADATA, "redirect_uris": [uri]})), error)
    unchanged(registration)


def test_a_nul_character_in_metadata_this_server_ignores_stays_ignored(http: HttpClient) -> None:
    """RFC 7591 §2: metadata the server does not understand is ignored; it is not stored either."""
    response = register(http, {**PUBLIC_METADATA, "x_vendor_note": f"a{NUL}b"})
    assert response.status_code == 201, response.content


def test_a_nul_character_in_the_management_uri_is_an_invalid_token(http: HttpClient) -> None:
    registration = registered(http)
    response = http.get(
        "/oauth/register/%00",
        HTTP_HOST=PUBLIC,
        HTTP_AUTHORIZATION=f"Bearer {registration['registration_access_token']}",
    )
    assert response.status_code == 401
    assert response.json() == {"error": "invalid_token", "error_description": "Token does not match client_id"}


# ---------------------------------------------------------------------------
# NUL characters at /oauth/token and /oauth/revoke
# ---------------------------------------------------------------------------
def token_request(client_id: str) -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": "some-code",
        "redirect_uri": LOOPBACK_REDIRECT,
        "client_id": client_id,
        "code_verifier": PKCE.make().verifier,
    }


@pytest.mark.parametrize("client_id", [NUL, f"abc{NUL}", f"{NUL}' OR 1=1"])
def test_a_nul_character_in_the_token_request_client_id_is_refused(
    http: HttpClient, public_client: Client, client_id: str
) -> None:
    refused(http.post("/oauth/token", token_request(client_id), HTTP_HOST=PUBLIC), NUL_REFUSED)
    assert not get_access_token_model().objects.exists()


@pytest.mark.parametrize("grant_type", ["refresh_token", f"refresh_token{NUL}"])
def test_a_nul_character_anywhere_in_a_token_request_is_refused(http: HttpClient, grant_type: str) -> None:
    data = {"grant_type": grant_type, "refresh_token": f"r{NUL}", "client_id": "some-client"}
    refused(http.post("/oauth/token", data, HTTP_HOST=PUBLIC), NUL_REFUSED)


@pytest.mark.parametrize(
    "authorization",
    [
        basic_auth(f"abc{NUL}", "secret"),  # RFC 6749 §2.3.1 form-encoding: %00
        "Basic " + base64.b64encode(f"abc{NUL}:secret".encode()).decode(),  # a raw NUL
        "Basic " + base64.b64encode(f"abc:se{NUL}cret".encode()).decode(),
    ],
)
def test_a_nul_character_in_basic_credentials_is_refused(
    http: HttpClient, confidential_client: Any, authorization: str
) -> None:
    data = {k: v for k, v in token_request("").items() if k != "client_id"}
    for endpoint in ("/oauth/token", "/oauth/revoke"):
        body = data if endpoint == "/oauth/token" else {"token": "some-token"}
        response = http.post(endpoint, body, HTTP_HOST=PUBLIC, HTTP_AUTHORIZATION=authorization)
        refused(response, NUL_REFUSED)
    assert not get_access_token_model().objects.exists()


def test_a_nul_character_in_a_revocation_request_is_refused(http: HttpClient, public_client: Client) -> None:
    for data in ({"token": "t", "client_id": f"x{NUL}"}, {"token": f"t{NUL}", "client_id": public_client.client_id}):
        refused(http.post("/oauth/revoke", data, HTTP_HOST=PUBLIC), NUL_REFUSED)


# ---------------------------------------------------------------------------
# NUL characters at /oauth/authorize (a browser route: an HTML page, or a redirect to the client)
# ---------------------------------------------------------------------------
def error_page(response: Any) -> str:
    assert response.status_code == 400, response.content
    assert not response.has_header("Location")
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "This sign-in request cannot continue" in html
    return html


@pytest.mark.parametrize("field", ["client_id", "redirect_uri"])
def test_a_nul_character_in_the_client_or_redirect_uri_gets_an_error_page(
    flow: Flow, public_client: Client, field: str
) -> None:
    """RFC 6749 §4.1.2.1: without a valid client and redirect URI, the person is told, nobody is redirected."""
    params = authorize_params(public_client.client_id, PKCE.make())
    params[field] += NUL
    html = error_page(flow.authorize(params))
    assert "invalid_request: The request contains a NUL character." in html
    assert not get_grant_model().objects.exists()


def test_a_nul_character_in_another_parameter_is_sent_back_to_the_client(flow: Flow, public_client: Client) -> None:
    flow.authorize_code(public_client.client_id)  # remembered from now on: the next request would mint a code
    response = flow.authorize(authorize_params(public_client.client_id, PKCE.make(), state="s1", nonce=f"n{NUL}"))
    assert flow.code_from(response) == {
        "error": "invalid_request",
        "error_description": "The request contains a NUL character.",
        "state": "s1",
        "iss": PUBLIC_BASE,
    }
    assert get_grant_model().objects.count() == 1  # the first approval's only


def test_a_nul_character_in_the_consent_form_gets_an_error_page(flow: Flow, public_client: Client) -> None:
    page = flow.authorize(authorize_params(public_client.client_id, PKCE.make()))
    assert page.status_code == 200
    for field in ("client_id", "nonce", "state"):
        data = {**hidden_inputs(page.content.decode()), field: f"x{NUL}", "allow": "Authorize"}
        response = flow.http.post(
            "/oauth/authorize", data, HTTP_HOST=PUBLIC, HTTP_ORIGIN=PUBLIC_BASE, **proxy_headers(ALICE)
        )
        assert "invalid_request: The request contains a NUL character." in error_page(response), field
    assert not get_grant_model().objects.exists()
    assert not Consent.objects.exists()


# ---------------------------------------------------------------------------
# Malformed encodings and shapes the fuzz tests found
# ---------------------------------------------------------------------------
def test_an_invalid_percent_escape_in_the_authorization_query_gets_an_error_page(
    flow: Flow, public_client: Client
) -> None:
    """oauthlib refuses ``%zz`` with a ValueError; the person gets the error page, nobody is redirected."""
    query = urlencode(authorize_params(public_client.client_id, PKCE.make())) + "&state=%zz"
    response = flow.http.get(f"/oauth/authorize?{query}", HTTP_HOST=PUBLIC, **proxy_headers(ALICE, "eng"))
    html = error_page(response)
    assert "invalid_request: The query string is not valid URL encoding" in html
    assert not get_grant_model().objects.exists()
    assert not Consent.objects.exists()


@pytest.mark.parametrize(
    "data",
    [{}, {"allow": "Authorize", "client_id": "nobody"}],
    ids=["empty form", "unknown client"],
)
def test_a_consent_form_without_a_valid_request_gets_an_error_page(
    flow: Flow, public_client: Client, data: dict[str, str]
) -> None:
    page = flow.authorize(authorize_params(public_client.client_id, PKCE.make()))  # for a CSRF token
    csrf = {"csrfmiddlewaretoken": hidden_inputs(page.content.decode())["csrfmiddlewaretoken"]}
    response = flow.http.post(
        "/oauth/authorize", {**csrf, **data}, HTTP_HOST=PUBLIC, HTTP_ORIGIN=PUBLIC_BASE, **proxy_headers(ALICE, "eng")
    )
    html = error_page(response)
    assert "invalid_request: The consent form is incomplete or names no known application." in html
    assert not get_grant_model().objects.exists()
    assert not Consent.objects.exists()


def test_the_disabled_client_lookup_skips_a_client_id_with_a_nul(public_client: Client) -> None:
    """PostgreSQL cannot compare a string holding NUL: the error page's lookup must not send it."""
    public_client.disabled = True
    public_client.save()
    assert disabled_client(f"{public_client.client_id}{NUL}") is None
    assert disabled_client(public_client.client_id) == public_client


@pytest.mark.parametrize("field", ["client_name", "software_id", "software_version", "contacts"])
def test_a_lone_surrogate_in_a_registration_string_is_refused(http: HttpClient, field: str) -> None:
    """JSON's ``\\ud800`` decodes to a string UTF-8 cannot encode (nor the database store)."""
    value: Any = ["x\ud800"] if field == "contacts" else "x\ud800"
    error = oauth_error("invalid_client_metadata", f"{field} must be valid Unicode text (UTF-8).")
    refused(register(http, json.dumps({**PUBLIC_METADATA, field: value})), error)
    assert not Client.objects.exists()
    registration = registered(http)
    refused(put(http, registration, json.dumps({**PUBLIC_METADATA, field: value})), error)
    unchanged(registration)


def test_a_lone_surrogate_in_a_redirect_uri_is_an_invalid_redirect_uri(http: HttpClient) -> None:
    response = register(http, json.dumps({**PUBLIC_METADATA, "redirect_uris": ["http://127.0.0.1:33418/\ud800"]}))
    refused(
        response,
        oauth_error("invalid_redirect_uri", "'http://127.0.0.1:33418/\\ud800' is not valid Unicode text (UTF-8)."),
    )
    assert not Client.objects.exists()


@pytest.mark.parametrize(
    "authorization", ["Basic \xe9\xe9", "Basic !!!!", "Basic " + base64.b64encode(b"\xff:x").decode()]
)
def test_undecodable_basic_credentials_are_an_invalid_client(
    http: HttpClient, confidential_client: Any, authorization: str
) -> None:
    """RFC 6749 §5.2: the client tried Basic authentication and it failed: 401 with a Basic challenge."""
    data = {k: v for k, v in token_request("").items() if k != "client_id"}
    for endpoint, body in (("/oauth/token", data), ("/oauth/revoke", {"token": "some-token"})):
        response = http.post(endpoint, body, HTTP_HOST=PUBLIC, HTTP_AUTHORIZATION=authorization)
        assert response.status_code == 401, (endpoint, response.content)
        assert response["Cache-Control"] == "no-store"
        assert response["WWW-Authenticate"] == 'Basic realm="oauth", charset="UTF-8"'
        assert response.json() == oauth_error(
            "invalid_client",
            "The Basic credentials are not base64 of a UTF-8 client_id:client_secret (RFC 6749 §2.3.1).",
        )
    assert not get_access_token_model().objects.exists()


@pytest.mark.parametrize("repeated", ["code", "client_id", "code_verifier", "grant_type"])
def test_a_token_request_repeating_a_parameter_is_refused(flow: Flow, public_client: Client, repeated: str) -> None:
    """RFC 6749 §3.2: parameters MUST NOT be included more than once; DOT would keep the last one."""
    query, pkce, _params = flow.authorize_code(public_client.client_id)
    pairs = list(token_request(public_client.client_id).items())
    pairs = [(k, query["code"] if k == "code" else pkce.verifier if k == "code_verifier" else v) for k, v in pairs]
    pairs.append((repeated, dict(pairs)[repeated]))
    response = flow.http.post(
        "/oauth/token", urlencode(pairs), content_type="application/x-www-form-urlencoded", HTTP_HOST=PUBLIC
    )
    refused(response, oauth_error("invalid_request", f"The parameter {repeated} was sent more than once."))
    assert not get_access_token_model().objects.exists()
    assert flow.exchange(public_client.client_id, query["code"], pkce).status_code == 200  # the code is still good


def test_a_parameter_repeated_across_query_and_body_is_refused(flow: Flow, public_client: Client) -> None:
    query, pkce, _params = flow.authorize_code(public_client.client_id)
    data = {**token_request(public_client.client_id), "code": query["code"], "code_verifier": pkce.verifier}
    response = flow.http.post("/oauth/token?code=other", data, HTTP_HOST=PUBLIC)
    refused(response, oauth_error("invalid_request", "The parameter code was sent more than once."))
    assert not get_access_token_model().objects.exists()


def test_a_revocation_request_repeating_a_parameter_is_refused(flow: Flow, public_client: Client) -> None:
    tokens = flow.get_tokens(public_client.client_id)
    pairs = [("token", tokens["access_token"]), ("token", "other"), ("client_id", public_client.client_id)]
    response = flow.http.post(
        "/oauth/revoke", urlencode(pairs), content_type="application/x-www-form-urlencoded", HTTP_HOST=PUBLIC
    )
    refused(response, oauth_error("invalid_request", "The parameter token was sent more than once."))
    assert get_access_token_model().objects.get().is_valid()  # not revoked


@pytest.mark.parametrize("method", ["post", "patch"])
def test_an_unsupported_method_at_the_management_uri_is_a_json_405(http: HttpClient, method: str) -> None:
    registration = registered(http)
    response = getattr(http, method)(
        f"/oauth/register/{registration['client_id']}",
        json.dumps({**PUBLIC_METADATA, "client_name": "Changed"}),
        content_type="application/json",
        HTTP_HOST=PUBLIC,
        HTTP_AUTHORIZATION=f"Bearer {registration['registration_access_token']}",
    )
    assert response.status_code == 405, response.content
    assert response["Allow"] == "GET, PUT, DELETE"
    assert response["Cache-Control"] == "no-store"
    assert response.json() == oauth_error(
        "invalid_request", "Use GET to read, PUT to update or DELETE to remove this registration (RFC 7592 §2)."
    )
    unchanged(registration)


def test_an_invalid_percent_escape_in_the_token_or_revocation_query_is_refused(
    http: HttpClient, public_client: Client
) -> None:
    """oauthlib reads these endpoints' query string too, and raises ValueError on ``%zz``."""
    error = oauth_error(
        "invalid_request", "The query string is not valid URL encoding (a % must be followed by two hex digits)."
    )
    refused(http.post("/oauth/token?x=%zz", token_request(public_client.client_id), HTTP_HOST=PUBLIC), error)
    refused(
        http.post("/oauth/revoke?x=%zz", {"token": "t", "client_id": public_client.client_id}, HTTP_HOST=PUBLIC), error
    )
    assert not get_access_token_model().objects.exists()


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_registration_with_another_method_than_post_is_a_json_405(http: HttpClient, method: str) -> None:
    """RFC 7591 §3: the registration endpoint takes POST; other methods get a JSON answer a client can read."""
    response = getattr(http, method)("/oauth/register", HTTP_HOST=PUBLIC)

    assert response.status_code == 405
    assert response.json() == oauth_error("invalid_request", "Register a client with POST (RFC 7591 §3.1).")
    assert response["Allow"] == "POST"
    assert response["Cache-Control"] == "no-store"
    assert Client.objects.count() == 0
