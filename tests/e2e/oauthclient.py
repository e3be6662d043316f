"""A real MCP OAuth client and a browser behind oauth2-proxy, both speaking HTTP over TCP.

The client does what the MCP authorization spec tells it to (2025-06-18 and later): protected
resource metadata from the path-suffixed well-known URL (RFC 9728 §3.1), the authorization
server's metadata from its issuer (RFC 8414 §3.1), dynamic registration (RFC 7591), the
authorization code grant with PKCE S256 (RFC 7636) and ``resource`` (RFC 8707), and refresh.
The browser is a person signed in at oauth2-proxy: every request carries the identity headers
oauth2-proxy adds, and cookies are kept.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit

import httpx2
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from tests import personas

ALICE = {"X-Forwarded-Email": personas.ALICE, "X-Forwarded-Groups": "eng"}
BOB = {"X-Forwarded-Email": personas.BOB, "X-Forwarded-Groups": "sales"}


def json_of(response: httpx2.Response) -> dict[str, Any]:
    """The JSON object a response carries; the assertion message shows the response otherwise."""
    assert response.headers.get("content-type", "").startswith("application/json"), (response, response.text)
    body = json.loads(response.content)
    assert isinstance(body, dict), body
    return body


class MemoryTokenStorage:
    """``mcp.client.auth.TokenStorage`` in memory: what a client would keep on disk."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def public_client_metadata(client_name: str, redirect_uri: str) -> OAuthClientMetadata:
    """What the ``mcp`` SDK's OAuth provider registers for a public client with a loopback redirect."""
    return OAuthClientMetadata(
        client_name=client_name,
        redirect_uris=[redirect_uri],
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="none",
    )


def authorization_code_result(params: dict[str, str]) -> AuthorizationCodeResult:
    """The redirect's query, handed to the SDK's ``callback_handler``."""
    assert "error" not in params, params
    return AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=params.get("iss"))


@dataclass(frozen=True)
class PKCE:
    verifier: str
    challenge: str

    @classmethod
    def make(cls) -> PKCE:
        verifier = secrets.token_urlsafe(48)
        digest = hashlib.sha256(verifier.encode()).digest()
        return cls(verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode())


@dataclass(frozen=True)
class Discovery:
    """What a client learns before it registers: the resource and its authorization server."""

    resource_metadata: dict[str, Any]
    server_metadata: dict[str, Any]

    @property
    def resource(self) -> str:
        return str(self.resource_metadata["resource"])

    @property
    def issuer(self) -> str:
        return str(self.server_metadata["issuer"])

    def endpoint(self, name: str) -> str:
        return str(self.server_metadata[f"{name}_endpoint"])


def discover(http: httpx2.Client, mcp_url: str) -> Discovery:
    """RFC 9728 §3.1 then RFC 8414 §3.1, starting from the /mcp URL the person configured."""
    parts = urlsplit(mcp_url)
    prm = http.get(f"{parts.scheme}://{parts.netloc}/.well-known/oauth-protected-resource{parts.path}")
    assert prm.status_code == 200, prm.text
    resource_metadata = json_of(prm)
    issuer = resource_metadata["authorization_servers"][0]
    issuer_parts = urlsplit(issuer)
    asm = http.get(
        f"{issuer_parts.scheme}://{issuer_parts.netloc}/.well-known/oauth-authorization-server{issuer_parts.path}"
    )
    assert asm.status_code == 200, asm.text
    return Discovery(resource_metadata, json_of(asm))


class _Form(HTMLParser):
    """The first form of a page: its action, hidden fields and submit buttons."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.method = "get"
        self.hidden: dict[str, str] = {}
        self.buttons: dict[str, str] = {}
        self._forms = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._forms += 1
            if self._forms == 1:
                self.action = a.get("action", "")
                self.method = a.get("method", "get").lower()
        elif self._forms == 1 and a.get("name"):
            if tag == "input" and a.get("type") == "hidden":
                self.hidden[a["name"]] = a.get("value", "")
            elif tag == "button" and a.get("type", "submit") == "submit":
                self.buttons[a["name"]] = a.get("value", "")


def submit_form(browser: httpx2.Client, page: httpx2.Response, button: str) -> httpx2.Response:
    """Press ``button`` on the page's form as a browser would: hidden fields, that button, Origin."""
    form = _Form()
    form.feed(page.text)
    assert form.action is not None, page.text
    assert form.method == "post", form.method
    assert button in form.buttons, form.buttons
    target = urljoin(str(page.url), form.action)
    origin = f"{page.url.scheme}://{page.url.netloc.decode()}"
    data = {**form.hidden, button: form.buttons[button]}
    return browser.post(target, data=data, headers={"Origin": origin, "Referer": str(page.url)})


def redirect_params(response: httpx2.Response, redirect_uri: str) -> dict[str, str]:
    """The query of a 302 back to the client's redirect URI."""
    assert response.status_code == 302, (response.status_code, response.text)
    location = response.headers["location"]
    assert location.split("?")[0] == redirect_uri, location
    return dict(parse_qsl(urlsplit(location).query))


def approve(
    browser: httpx2.Client, authorize_url: str, redirect_uri: str, *, consent_text: tuple[str, ...] = ()
) -> dict[str, str]:
    """Be the person a client sent to ``authorize_url``: consent if asked; the redirect's query.

    What a browser does between a client opening the authorization URL and the redirect back
    to it; the redirect itself is not followed (nothing need listen at ``redirect_uri``).
    ``consent_text``: strings the consent page must show, if there is one.
    """
    page = browser.get(authorize_url)
    if page.status_code == 200:
        for text in consent_text:
            assert text in page.text, (text, page.text)
        page = submit_form(browser, page, "allow")
    return redirect_params(page, redirect_uri)


@dataclass
class Grant:
    """An authorization the person gave: the code and what must accompany it at /token."""

    code: str
    redirect_uri: str
    pkce: PKCE
    state: str
    params: dict[str, str]
    consent_shown: bool


def authorize(
    browser: httpx2.Client,
    discovery: Discovery,
    *,
    client_id: str,
    redirect_uri: str,
    scope: str = "mcp",
    consent_text: tuple[str, ...] = (),
) -> Grant:
    """Send the person to the authorization endpoint; consent if asked; return the code.

    ``consent_text``: strings the consent page must show, if there is one (an approval given
    before is remembered and answers with the redirect at once).
    """
    pkce = PKCE.make()
    state = "st-" + secrets.token_urlsafe(12)
    query = authorization_query(client_id, redirect_uri, discovery.resource, state, pkce.challenge, scope=scope)
    page = browser.get(discovery.endpoint("authorization") + "?" + query)
    consent_shown = page.status_code == 200
    if consent_shown:
        for text in consent_text:
            assert text in page.text, (text, page.text)
        page = submit_form(browser, page, "allow")
    params = redirect_params(page, redirect_uri)
    assert "error" not in params, params
    assert params["state"] == state  # AS3
    assert params["iss"] == discovery.issuer  # RFC 9207
    return Grant(params["code"], redirect_uri, pkce, state, params, consent_shown)


def register(
    http: httpx2.Client, discovery: Discovery, name: str, redirect_uri: str, auth_method: str, **extra: str
) -> dict[str, Any]:
    """RFC 7591 registration, as the client named would send it (``extra``: further metadata)."""
    response = http.post(
        discovery.endpoint("registration"),
        json={
            "client_name": name,
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": auth_method,
            **extra,
        },
    )
    assert response.status_code == 201, response.text
    return json_of(response)


def authorization_query(
    client_id: str, redirect_uri: str, resource: str, state: str, code_challenge: str, *, scope: str = "mcp"
) -> str:
    """The authorization request's query (RFC 6749 §4.1.1 with PKCE S256 and the RFC 8707 resource)."""
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": state,
        "code_challenge": code_challenge,
        "code_challenge_method": "S256",
        "resource": resource,
    }
    return urlencode(query)


def basic_auth(client_id: str, client_secret: str) -> str:
    """RFC 6749 §2.3.1: both parts form-urlencoded, then Basic."""
    raw = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
    return "Basic " + base64.b64encode(raw.encode()).decode()


def token_request(
    http: httpx2.Client, discovery: Discovery, data: dict[str, str], headers: dict[str, str] | None = None
) -> httpx2.Response:
    response = http.post(discovery.endpoint("token"), data=data, headers=headers or {})
    # RFC 6749 §5.1 / §5.2: neither tokens nor errors may be cached.
    assert response.headers.get("cache-control") == "no-store", response.headers
    return response


def exchange(
    http: httpx2.Client,
    discovery: Discovery,
    grant: Grant,
    *,
    client_id: str,
    client_secret: str | None = None,
    auth_method: str = "none",
) -> httpx2.Response:
    """RFC 6749 §4.1.3 with the PKCE verifier and the RFC 8707 resource."""
    data = {
        "grant_type": "authorization_code",
        "code": grant.code,
        "redirect_uri": grant.redirect_uri,
        "code_verifier": grant.pkce.verifier,
        "resource": discovery.resource,
    }
    return token_request(http, discovery, *_authenticate(data, client_id, client_secret, auth_method))


def refresh(
    http: httpx2.Client,
    discovery: Discovery,
    refresh_token: str,
    *,
    client_id: str,
    client_secret: str | None = None,
    auth_method: str = "none",
) -> httpx2.Response:
    """RFC 6749 §6, naming the resource again as the MCP SDK does."""
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, "resource": discovery.resource}
    return token_request(http, discovery, *_authenticate(data, client_id, client_secret, auth_method))


def _authenticate(
    data: dict[str, str], client_id: str, client_secret: str | None, auth_method: str
) -> tuple[dict[str, str], dict[str, str]]:
    if auth_method == "client_secret_basic":
        assert client_secret
        return data, {"Authorization": basic_auth(client_id, client_secret)}
    if auth_method == "client_secret_post":
        assert client_secret
        return {**data, "client_id": client_id, "client_secret": client_secret}, {}
    assert auth_method == "none", auth_method
    return {**data, "client_id": client_id}, {}


def person_token(server: Any, *, client_name: str, redirect_uri: str, person: dict[str, str] = ALICE) -> str:
    """An access token for ``server``'s internal /mcp (a tests.e2e.server.GunicornServer): discovery, dynamic
    registration of a public client, the person's consent through the proxy headers, the code, the exchange.

    The server remembers both tokens, so its log is checked for them at the end.
    """
    with server.client() as client, server.client(headers=person) as browser:
        discovery = discover(client, server.internal + "/mcp")
        registered = client.post(
            discovery.endpoint("registration"),
            json={"client_name": client_name, "redirect_uris": [redirect_uri], "token_endpoint_auth_method": "none"},
        )
        client_id = json_of(registered)["client_id"]
        grant = authorize(browser, discovery, client_id=client_id, redirect_uri=redirect_uri)
        tokens = json_of(exchange(client, discovery, grant, client_id=client_id))
    token = str(tokens["access_token"])
    server.remember(token, tokens.get("refresh_token"))
    return token
