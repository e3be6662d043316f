"""Registration policy (RFC 7591 §2, §3.2.2): which client metadata is accepted, and why not."""

from __future__ import annotations

import json
import logging
from typing import Any

from .models import Client
from .redirects import redirect_uri_problem
from .text import NUL, contains_nul

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# /oauth/register (RFC 7591) and /oauth/register/<client_id> (RFC 7592)
# ---------------------------------------------------------------------------
SUPPORTED_GRANT_TYPES = ("authorization_code", "refresh_token")
INVALID_METADATA = "invalid_client_metadata"
INVALID_REDIRECT_URI = "invalid_redirect_uri"
TOO_DEEP = "Request body is nested too deeply."

# RFC 7591 §2 client metadata (and OpenID Connect Registration's application_type), by JSON type.
# Fields this server does not know are ignored (RFC 7591 §2), and never stored.
STRING_FIELDS = (
    "client_name",
    "client_uri",
    "logo_uri",
    "scope",
    "tos_uri",
    "policy_uri",
    "jwks_uri",
    "software_id",
    "software_version",
    "software_statement",
    "token_endpoint_auth_method",
    "application_type",
)
STRING_ARRAY_FIELDS = ("redirect_uris", "grant_types", "response_types", "contacts")
OBJECT_FIELDS = ("jwks",)
# The fields this server reads. The others it ignores, so there a JSON null means "not given"
# (RFC 7592 §2.2 treats an omitted field as null); here null is a value of the wrong type.
USED_FIELDS = frozenset(
    {
        "client_name",
        "software_id",
        "software_version",
        "token_endpoint_auth_method",
        "redirect_uris",
        "grant_types",
        "response_types",
    }
)
# DOT's wording for the arrays DOT reads too, so a refusal reads the same whichever check meets it.
ARRAY_MESSAGES = {
    "redirect_uris": ("redirect_uris must be an array", "Each redirect_uri must be a string"),
    "grant_types": ("grant_types must be an array", "Each grant_type must be a string"),
}
# What the columns hold: Client.name, Client.software_id, Client.software_version.
MAX_LENGTHS = {"client_name": 255, "software_id": 255, "software_version": 64}
# Each redirect URI is checked against the allowlist; clients register one or two.
MAX_REDIRECT_URIS = 20
# Client metadata is three levels deep at most (jwks: object, keys array, key object).
MAX_JSON_DEPTH = 16


class RegistrationRefused(Exception):
    """An RFC 7591 §3.2.2 error response: ``error`` (invalid_client_metadata or invalid_redirect_uri) and why."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def registration_metadata(body: bytes) -> dict[str, Any]:
    """The JSON object of an RFC 7591 §3.1 or RFC 7592 §2.2 request; raises RegistrationRefused.

    Python's parser recurses once per level of nesting and raises RecursionError on deep
    input. Anything nested deeper than client metadata ever is (MAX_JSON_DEPTH) is refused as
    well, so DOT parsing the same body again a few frames further down the stack cannot be the
    one that hits the limit.
    """
    try:
        metadata = json.loads(body)
    except RecursionError:
        raise RegistrationRefused(INVALID_METADATA, TOO_DEEP) from None
    except ValueError:
        raise RegistrationRefused(INVALID_METADATA, "Request body must be valid JSON") from None
    if not isinstance(metadata, dict):
        raise RegistrationRefused(INVALID_METADATA, "Request body must be a JSON object")
    if _nesting(metadata) > MAX_JSON_DEPTH:
        raise RegistrationRefused(INVALID_METADATA, TOO_DEEP)
    return metadata


def _nesting(value: Any) -> int:
    """How deep arrays and objects nest in ``value`` (without recursing), up to MAX_JSON_DEPTH + 1."""
    deepest, pending = 0, [(value, 1)]
    while pending and deepest <= MAX_JSON_DEPTH:
        node, depth = pending.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            pending.extend((child, depth + 1) for child in children)
    return deepest


def check_registration_metadata(metadata: dict[str, Any]) -> None:
    """Refuse (RegistrationRefused) metadata this server does not register (checklist AS1, AS2, AS6).

    The one policy for RFC 7591 registration and RFC 7592 update: each RFC 7591 §2 field
    given has its JSON type (``client_name: null`` is not a name), no string holds a NUL or a lone surrogate,
    stored values fit their columns, only the code flow is asked for, and every redirect URI
    passes the redirect URI policy (RFC 7591 §3.2.2 ``invalid_redirect_uri``).
    """
    given = {field: value for field, value in metadata.items() if value is not None or field in USED_FIELDS}
    for field in STRING_FIELDS:
        if field in given and not isinstance(given[field], str):
            raise RegistrationRefused(INVALID_METADATA, f"{field} must be a string.")
    for field in STRING_ARRAY_FIELDS:
        not_array, not_strings = ARRAY_MESSAGES.get(field, (f"{field} must be an array of strings.",) * 2)
        if field in given and not isinstance(given[field], list):
            raise RegistrationRefused(INVALID_METADATA, not_array)
        if not all(isinstance(item, str) for item in given.get(field, [])):
            raise RegistrationRefused(INVALID_METADATA, not_strings)
    for field in OBJECT_FIELDS:
        if field in given and not isinstance(given[field], dict):
            raise RegistrationRefused(INVALID_METADATA, f"{field} must be an object.")
    redirect_uris: list[str] = given.get("redirect_uris", [])
    for uri in redirect_uris:
        if NUL in uri:
            raise RegistrationRefused(INVALID_REDIRECT_URI, f"{uri!r} contains a NUL character.")
        if not _encodes_to_utf8(uri):
            raise RegistrationRefused(INVALID_REDIRECT_URI, f"{uri!r} is not valid Unicode text (UTF-8).")
    for field in (*STRING_FIELDS, *STRING_ARRAY_FIELDS):
        value = given.get(field, "")
        values = [value] if isinstance(value, str) else value
        if contains_nul(values):
            raise RegistrationRefused(INVALID_METADATA, f"{field} must not contain a NUL character.")
        if not all(_encodes_to_utf8(item) for item in values):
            raise RegistrationRefused(INVALID_METADATA, f"{field} must be valid Unicode text (UTF-8).")
    for field, limit in MAX_LENGTHS.items():
        if len(given.get(field, "")) > limit:
            raise RegistrationRefused(INVALID_METADATA, f"{field} must be at most {limit} characters.")
    problem = unsupported_flow_problem(given)
    if problem:
        raise RegistrationRefused(INVALID_METADATA, problem)
    if not redirect_uris:
        raise RegistrationRefused(INVALID_METADATA, "redirect_uris is required for grant type 'authorization_code'")
    if len(redirect_uris) > MAX_REDIRECT_URIS:
        raise RegistrationRefused(INVALID_METADATA, f"At most {MAX_REDIRECT_URIS} redirect_uris can be registered.")
    for uri in redirect_uris:
        problem = redirect_uri_problem(uri)
        if problem:
            raise RegistrationRefused(INVALID_REDIRECT_URI, problem)


def registration_request(body: bytes) -> dict[str, Any]:
    """The client metadata of an RFC 7591 §3.1 request, once the registration policy accepts it.

    Raises RegistrationRefused (RFC 7591 §3.2.2) for a body that is not a JSON object or
    metadata this server does not register (``check_registration_metadata``).
    """
    metadata = registration_metadata(body)
    check_registration_metadata(metadata)
    return metadata


def _encodes_to_utf8(value: str) -> bool:
    """False for a string with a lone surrogate: JSON's ``"\\ud800"`` decodes to one (RFC 8259 §8.2).

    UTF-8 cannot encode it, so neither the database nor a JSON response can carry it.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def unsupported_flow_problem(metadata: dict[str, Any]) -> str | None:
    """Why the grant and response types asked for cannot be had here (checklist AS1), or None.

    RFC 7591 §2 defaults are ``["authorization_code"]`` and ``["code"]``. DOT would register
    an implicit, password or client_credentials client that this server then never serves.
    Both are arrays of strings by now (``check_registration_metadata``).
    """
    grant_types = metadata.get("grant_types", ["authorization_code"])
    if not set(grant_types) <= set(SUPPORTED_GRANT_TYPES):
        return "This server supports only the authorization_code and refresh_token grant types."
    if "authorization_code" not in grant_types:
        return "grant_types must include authorization_code."
    if not set(metadata.get("response_types", ["code"])) <= {"code"}:
        return "This server supports only the code response type."
    return None


def check_update_metadata(client: Client, metadata: dict[str, Any]) -> None:
    """RFC 7592 §2.2 on top of the registration policy; raises RegistrationRefused.

    The client_id, if sent, must be the client's own. How the client authenticates never
    changes: a public client made confidential would have no secret, a confidential one made
    public would shed its secret. An omitted token_endpoint_auth_method keeps the current one
    (§2.2 lets the server keep a value and say so in the response) rather than falling back to
    RFC 7591's default, client_secret_basic.
    """
    if "client_id" in metadata and metadata["client_id"] != client.client_id:
        raise RegistrationRefused(INVALID_METADATA, "client_id must be the client_id of this registration.")
    current = client.token_endpoint_auth_method
    if metadata.get("token_endpoint_auth_method", current) != current:
        raise RegistrationRefused(
            INVALID_METADATA,
            f"token_endpoint_auth_method cannot be changed (it is {current!r}); register a new client instead.",
        )
