"""mcpgate as an upstream authorization server's OAuth client (issue 12, per-person OAuth): discovery, the
authorization request, the code exchange and refresh.

The MCP authorization spec's client side, with mcpgate as the client and each person signing in at the
upstream's own server: endpoints from RFC 9728 protected resource metadata and RFC 8414 server metadata
(the ``mcp`` SDK's discovery URL builders and models), the authorization code grant with PKCE S256
(RFC 7636 §4; a server that does not list S256 is refused, as MCP authorization, "Authorization Code
Protection", requires), the ``resource`` parameter naming the upstream (RFC 8707 §2), the ``iss``
response parameter checked when the server has one (RFC 9207 §2.4), and refresh (RFC 6749 §6), whose
answer may rotate the refresh token (OAuth 2.1 §4.3.1). The client authenticates with
``client_secret_basic`` (RFC 6749 §2.3.1) when it has a secret, else it is a public client.

Everything here is synchronous (the console, commands and views; /mcp calls it in a worker thread) and
bounded by ``TIMEOUT`` seconds. A failure is ``OAuthFailed`` with a ``Problem`` and a line for people
that never holds a token, a code or a secret.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx2
from mcp.client.auth.utils import (
    build_oauth_authorization_server_metadata_discovery_urls,
    build_protected_resource_metadata_discovery_urls,
)
from mcp.shared.auth import (
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthMetadata,
    OAuthToken,
    ProtectedResourceMetadata,
)
from pydantic import ValidationError

TIMEOUT = 10.0


class Problem(StrEnum):
    """What went wrong at the upstream's authorization server."""

    REFUSED = "refused"  # it answered with an OAuth error (RFC 6749 §5.2): invalid_grant, invalid_client…
    UNAVAILABLE = "unavailable"  # no answer within TIMEOUT, or a connection failure, or a 5xx
    INVALID = "invalid"  # an answer that is not what the spec says it must be


class OAuthFailed(Exception):
    """The upstream's authorization server did not give what was asked; ``str()`` is for people."""

    def __init__(self, problem: Problem, message: str, *, error: str = "") -> None:
        super().__init__(message)
        self.problem = problem
        self.error = error  # the RFC 6749 §5.2 error code, when it gave one


@dataclass(frozen=True)
class Endpoints:
    """Where a person signs in and where codes and refresh tokens are exchanged."""

    authorization_url: str
    token_url: str
    issuer: str = ""  # RFC 8414 ``issuer``, when discovered
    registration_url: str = ""  # RFC 7591 endpoint, when the server offers one


@dataclass(frozen=True)
class OAuthClient:
    """mcpgate's registration at the upstream's authorization server (``repr`` omits the secret)."""

    client_id: str
    endpoints: Endpoints
    resource: str  # the upstream's MCP URL (RFC 8707)
    scopes: tuple[str, ...] = ()
    client_secret: str = field(default="", repr=False)


@dataclass(frozen=True)
class Pkce:
    """RFC 7636 §4.1-4.2: a verifier and its S256 challenge."""

    verifier: str = field(repr=False)

    @classmethod
    def make(cls) -> Pkce:
        return cls(verifier=secrets.token_urlsafe(48))

    @property
    def challenge(self) -> str:
        digest = hashlib.sha256(self.verifier.encode("ascii")).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def discover(resource: str) -> Endpoints:
    """The authorization server of the MCP server at ``resource``: RFC 9728 metadata (path-aware, then at
    the root), its first ``authorization_servers`` entry, and that server's RFC 8414 (or OpenID) metadata,
    whose ``issuer`` must be the one it was found under (RFC 8414 §3.3)."""
    with httpx2.Client(timeout=TIMEOUT, follow_redirects=False) as http:
        resource_metadata = _first(
            http, build_protected_resource_metadata_discovery_urls(None, resource), ProtectedResourceMetadata
        )
        issuer = str(resource_metadata.authorization_servers[0]) if resource_metadata is not None else None
        metadata = _first(
            http, build_oauth_authorization_server_metadata_discovery_urls(issuer, resource), OAuthMetadata
        )
    if metadata is None:
        raise OAuthFailed(Problem.INVALID, f"no OAuth metadata found for {resource} (RFC 9728, RFC 8414)")
    if issuer is not None and str(metadata.issuer).rstrip("/") != issuer.rstrip("/"):
        raise OAuthFailed(Problem.INVALID, f"the metadata's issuer {metadata.issuer} is not {issuer} (RFC 8414 §3.3)")
    if "S256" not in (metadata.code_challenge_methods_supported or []):
        raise OAuthFailed(
            Problem.INVALID, "the authorization server does not list PKCE S256 in code_challenge_methods_supported"
        )
    return Endpoints(
        authorization_url=str(metadata.authorization_endpoint),
        token_url=str(metadata.token_endpoint),
        issuer=str(metadata.issuer),
        registration_url=str(metadata.registration_endpoint) if metadata.registration_endpoint else "",
    )


@dataclass(frozen=True)
class Registered:
    """What an RFC 7591 registration gave (``repr`` omits the secret)."""

    client_id: str
    client_secret: str = field(default="", repr=False)


def register(endpoints: Endpoints, *, redirect_uris: list[str], scopes: tuple[str, ...]) -> Registered:
    """RFC 7591 §3.1: register mcpgate as a confidential web client with ``redirect_uris`` (the /connect/
    callbacks of every mcpgate host); §3.2.1: the client id and secret the server assigned."""
    metadata = OAuthClientMetadata.model_validate(
        {
            "client_name": "mcpgate",
            "redirect_uris": redirect_uris,
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic",
            "application_type": "web",
            **({"scope": " ".join(scopes)} if scopes else {}),
        }
    )
    where = _origin(endpoints.registration_url)
    try:
        with httpx2.Client(timeout=TIMEOUT, follow_redirects=False) as http:
            response = http.post(
                endpoints.registration_url,
                json=metadata.model_dump(mode="json", exclude_none=True),
                headers={"Accept": "application/json"},
            )
    except httpx2.HTTPError as exc:
        raise OAuthFailed(Problem.UNAVAILABLE, f"{where} could not be reached ({type(exc).__name__})") from None
    if response.status_code not in (200, 201):
        error = _json_object(response).get("error")
        said = f": {str(error)[:60]}" if isinstance(error, str) else ""
        raise OAuthFailed(Problem.REFUSED, f"{where} refused the registration (HTTP {response.status_code}{said})")
    try:
        information = OAuthClientInformationFull.model_validate_json(response.content)
    except ValidationError:
        raise OAuthFailed(Problem.INVALID, f"{where} answered the registration with something else") from None
    if not information.client_id:
        raise OAuthFailed(Problem.INVALID, f"{where} answered the registration without a client_id")
    return Registered(client_id=information.client_id, client_secret=information.client_secret or "")


def _first(http: httpx2.Client, urls: list[str], model: Any) -> Any:
    """The first of ``urls`` that answers 200 with a valid ``model`` document; None if none does."""
    for url in urls:
        try:
            response = http.get(url, headers={"Accept": "application/json"})
        except httpx2.HTTPError as exc:
            raise OAuthFailed(Problem.UNAVAILABLE, f"{_origin(url)} did not answer ({type(exc).__name__})") from None
        if response.status_code == 200:
            try:
                return model.model_validate_json(response.content)
            except ValidationError:
                continue
    return None


def authorization_url(client: OAuthClient, *, state: str, pkce: Pkce, redirect_uri: str) -> str:
    """Where to send the person (RFC 6749 §4.1.1 with RFC 7636 §4.3 and RFC 8707 §2)."""
    query = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": redirect_uri,
        "state": state,
        "code_challenge": pkce.challenge,
        "code_challenge_method": "S256",
        "resource": client.resource,
    }
    if client.scopes:
        query["scope"] = " ".join(client.scopes)
    separator = "&" if urlsplit(client.endpoints.authorization_url).query else "?"
    return client.endpoints.authorization_url + separator + urlencode(query)


def exchange_code(client: OAuthClient, *, code: str, pkce: Pkce, redirect_uri: str) -> OAuthToken:
    """RFC 6749 §4.1.3: the code for tokens."""
    return _token_request(
        client,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": pkce.verifier,
        },
    )


def refresh(client: OAuthClient, *, refresh_token: str) -> OAuthToken:
    """RFC 6749 §6: a refresh token for a new access token (and, with rotation, a new refresh token)."""
    return _token_request(client, {"grant_type": "refresh_token", "refresh_token": refresh_token})


def _token_request(client: OAuthClient, form: dict[str, str]) -> OAuthToken:
    form = {**form, "resource": client.resource}
    # client_id in the body even with Basic: optional then (RFC 6749 §4.1.3), and some servers (the mcp
    # SDK's among them) look the client up by it.
    form["client_id"] = client.client_id
    headers = {"Accept": "application/json"}
    if client.client_secret:
        # RFC 6749 §2.3.1: each part form-urlencoded before the Basic encoding.
        pair = f"{quote(client.client_id, safe='')}:{quote(client.client_secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    where = _origin(client.endpoints.token_url)
    try:
        with httpx2.Client(timeout=TIMEOUT, follow_redirects=False) as http:
            response = http.post(client.endpoints.token_url, data=form, headers=headers)
    except httpx2.TimeoutException:
        raise OAuthFailed(Problem.UNAVAILABLE, f"{where} did not answer within {TIMEOUT:g} seconds") from None
    except httpx2.HTTPError as exc:
        raise OAuthFailed(Problem.UNAVAILABLE, f"{where} could not be reached ({type(exc).__name__})") from None
    body = _json_object(response)
    if response.status_code >= 500:
        raise OAuthFailed(Problem.UNAVAILABLE, f"{where} answered HTTP {response.status_code}")
    if response.status_code != 200:
        error = body.get("error") if isinstance(body.get("error"), str) else ""
        if response.status_code in (400, 401) and error:
            raise OAuthFailed(Problem.REFUSED, f"{where} refused: {error[:60]}", error=error[:60])
        raise OAuthFailed(Problem.INVALID, f"{where} answered HTTP {response.status_code} without an OAuth error")
    try:
        return OAuthToken.model_validate(body)
    except ValidationError:
        raise OAuthFailed(Problem.INVALID, f"{where} answered with something that is not a bearer token") from None


def _json_object(response: httpx2.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
