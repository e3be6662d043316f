"""Adding, changing and removing upstreams: every rule an operator's input must meet, in one place.

The console and the management commands both come here; each refusal is ``UpstreamInvalid`` with one
line written for the operator (never a credential's value).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.models import AuditKind
from audit.services import audit_record
from mcpgate.hosts import configured_hosts
from oauth_ext.models import User
from oauth_ext.scopes import BASIC_SCOPE, all_scopes

from .assertions import assertion_key_current
from .catalog import SEPARATOR
from .crypto import KeyMissing, seal
from .link import UpstreamConfig, describe, probe
from .models import NAME_PATTERN, Credential, Transport, Upstream
from .runtime import exposed_names_elsewhere
from .upstream_oauth import Endpoints, OAuthFailed, discover, register

MAX_TIMEOUT = 600.0
# RFC 9110 §5.1 field-name (token characters).
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# RFC 6749 §3.3 scope-token: printable ASCII but space, " and \.
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")
# Headers the HTTP client or the MCP transport sets itself: configuring one would break the exchange.
_RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "accept",
        "mcp-session-id",
        "mcp-protocol-version",
        "mcp-method",
        "mcp-name",
        "last-event-id",
    }
)


class Field(StrEnum):
    """What a refusal is about (the console puts the message next to that field)."""

    NAME = "name"
    PREFIX = "prefix"
    URL = "url"
    COMMAND = "command"
    HEADERS = "headers"
    ENV = "env"
    GROUPS = "groups"
    SCOPES = "scopes"
    TIMEOUT = "timeout"
    IDENTITY_ASSERTION = "identity_assertion_header"
    CREDENTIAL = "credential"
    OAUTH = "oauth"  # the per-person OAuth client: id, secret, endpoints, scopes
    TOKEN_PATTERN = "token_pattern"  # noqa: S105 - a field name
    KEYS = "keys"  # MCPGATE_UPSTREAM_KEYS: not a field, a setting


class UpstreamInvalid(Exception):
    """Operator input refused; the message (one line, written for the command line) says what to change."""

    def __init__(self, message: str, field: Field | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Target:
    """Where an upstream is: a URL (Streamable HTTP or legacy SSE) or a command (stdio)."""

    transport: Transport
    url: str = ""
    command: tuple[str, ...] = ()


@dataclass(frozen=True)
class OAuthSettings:
    """mcpgate's client registration at a per-person OAuth upstream's authorization server (gateway.upstream_oauth).

    ``client_secret`` None keeps the stored one (a change); "" is a public client.
    """

    client_id: str
    authorization_url: str
    token_url: str
    issuer: str = ""
    scopes: tuple[str, ...] = ()
    client_secret: str | None = field(default=None, repr=False)


def oauth_settings(
    *,
    name: str,
    url: str,
    client_id: str,
    client_secret: str | None,
    authorization_url: str = "",
    token_url: str = "",
    scopes: Iterable[str] = (),
) -> OAuthSettings:
    """``--per-person-oauth``'s options checked; the endpoints discovered from the upstream's RFC 9728 and
    RFC 8414 metadata when not given; and without ``client_id``, mcpgate registered at the authorization
    server (RFC 7591) with the callback of every host. Network requests: run outside an event loop."""
    option = "--per-person-oauth"
    client_id = client_id.strip()
    if len(client_id) > 300 or not client_id.isprintable():
        raise UpstreamInvalid(f"{option}: --client-id is not a client id", Field.OAUTH)
    if client_secret is not None and any(c in client_secret for c in "\r\n\0"):
        raise UpstreamInvalid(f"{option}: the client secret must be one line", Field.OAUTH)
    wanted = tuple(dict.fromkeys(scope for scope in scopes if scope))
    for scope in wanted:
        if not _SCOPE_TOKEN.match(scope):
            raise UpstreamInvalid(f"{option}: {scope[:60]!r} is not an OAuth scope (RFC 6749 §3.3)", Field.OAUTH)
    authorization_url, token_url = authorization_url.strip(), token_url.strip()
    if bool(authorization_url) != bool(token_url):
        raise UpstreamInvalid(
            f"{option}: give both --authorization-url and --token-url, or neither (then they are discovered)",
            Field.OAUTH,
        )
    for given in (authorization_url, token_url) if authorization_url else ():
        parts = urlsplit(given)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment or parts.username:
            raise UpstreamInvalid(f"{option}: {given[:200]!r} is not an http:// or https:// URL", Field.OAUTH)
    endpoints = Endpoints(authorization_url, token_url)
    if not authorization_url or not client_id:
        try:
            endpoints = discover(url)
        except OAuthFailed as exc:
            raise UpstreamInvalid(
                f"{option}: cannot discover the authorization server of {_without_query(url)} ({exc}); "
                "give --authorization-url and --token-url"
                + ("" if client_id else ", and --client-id (mcpgate registers itself only where it can discover)"),
                Field.OAUTH,
            ) from None
        if authorization_url:  # given: they win over what was discovered for the registration
            endpoints = Endpoints(authorization_url, token_url, endpoints.issuer, endpoints.registration_url)
    if not client_id:
        client_id, client_secret = _registered(name, endpoints, wanted)
    return OAuthSettings(
        client_id, endpoints.authorization_url, endpoints.token_url, endpoints.issuer, wanted, client_secret
    )


def _registered(name: str, endpoints: Endpoints, scopes: tuple[str, ...]) -> tuple[str, str]:
    """mcpgate registered at the upstream's authorization server (RFC 7591), with the /connect/ callback of
    every host people reach mcpgate at."""
    option = "--per-person-oauth"
    if not endpoints.registration_url:
        raise UpstreamInvalid(
            f"{option}: --client-id is required: the authorization server offers no registration (RFC 7591)",
            Field.OAUTH,
        )
    callbacks = [host.url(f"/connect/{name}/callback") for host in configured_hosts()]
    try:
        registered = register(endpoints, redirect_uris=callbacks, scopes=scopes)
    except OAuthFailed as exc:
        raise UpstreamInvalid(f"{option}: registering mcpgate failed ({exc}); give --client-id", Field.OAUTH) from None
    return registered.client_id, registered.client_secret


def parse_header(text: str) -> tuple[str, str]:
    """``"Name: value"`` as given to ``--header`` (RFC 9110 §5: a token, a colon, a value on one line)."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not _HEADER_NAME.match(name) or not value or any(c in value for c in "\r\n\0"):
        raise UpstreamInvalid(f"--header must be 'Name: value', not {_redacted(text)!r}", Field.HEADERS)
    if name.lower() in _RESERVED_HEADERS:
        raise UpstreamInvalid(
            f"--header {name}: set by mcpgate itself for every request; it cannot be configured", Field.HEADERS
        )
    return name, value


def parse_env(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` as given to ``--env``."""
    name, sep, value = text.partition("=")
    if not sep or not _ENV_NAME.match(name) or "\0" in value:
        raise UpstreamInvalid(
            f"--env must be NAME=VALUE with NAME of letters, digits and _, not {_redacted(text)!r}", Field.ENV
        )
    return name, value


def _redacted(text: str) -> str:
    """What an operator typed, shown only as far as it cannot be a secret: a name before the first ':' or
    '=', else its first word (``Authorization Bearer sk-…`` without its colon is all secret after the name)."""
    for sep in (":", "="):
        if sep in text:
            head = text.split(sep, 1)[0]
            if not any(c.isspace() for c in head.strip()):
                return f"{head.strip()[:60]}{sep} …"
            break
    words = text.split()
    return f"{words[0][:60]} …" if len(words) > 1 else "…"


def target_from(*, url: str | None, command: str | Iterable[str] | None, sse: bool = False) -> Target:
    """Exactly one of a URL (http or https, no user:password in it) or a command."""
    if bool(url) == bool(command):
        raise UpstreamInvalid("give exactly one of --url (an HTTP upstream) or --command (a stdio upstream)", Field.URL)
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamInvalid(f"--url must be an http:// or https:// URL, not {url[:200]!r}", Field.URL)
        if parts.username or parts.password:
            raise UpstreamInvalid("--url must not carry a user or password; use --header for credentials", Field.URL)
        if parts.fragment:
            raise UpstreamInvalid("--url must not have a #fragment", Field.URL)
        return Target(Transport.SSE if sse else Transport.STREAMABLE_HTTP, url=url)
    if sse:
        raise UpstreamInvalid("--sse applies to --url upstreams only", Field.URL)
    argv = tuple(shlex.split(command) if isinstance(command, str) else command or ())
    if not argv:
        raise UpstreamInvalid("--command must name a program", Field.COMMAND)
    if any("\0" in part for part in argv):
        raise UpstreamInvalid("--command must not contain NUL characters", Field.COMMAND)
    return Target(Transport.STDIO, command=argv)


def _check_name(field: Field, value: str) -> None:
    if not re.match(NAME_PATTERN, value):
        raise UpstreamInvalid(
            f"{field} {value!r} must be 1-31 lower-case letters, digits and dashes (e.g. github)", field
        )


def _check_prefix(prefix: str, *, exclude: int | None, local_tools: Iterable[str]) -> None:
    if not prefix:
        return
    _check_name(Field.PREFIX, prefix)
    taken = Upstream.objects.filter(prefix=prefix)
    if exclude is not None:
        taken = taken.exclude(pk=exclude)
    if taken.exists():
        raise UpstreamInvalid(f"prefix {prefix!r} is taken by the upstream {taken.get().name!r}", Field.PREFIX)
    clashing = sorted(name for name in local_tools if name.startswith(prefix + SEPARATOR))
    if clashing:
        raise UpstreamInvalid(f"prefix {prefix!r} would clash with the local tool {clashing[0]!r}", Field.PREFIX)


def _check_scopes(scopes: Iterable[str]) -> list[str]:
    known = all_scopes()
    wanted = sorted({s for s in scopes if s != BASIC_SCOPE})
    for scope in wanted:
        if scope not in known:
            raise UpstreamInvalid(
                f"unknown scope {scope!r}: declare it first in MCPGATE_EXTRA_SCOPES "
                f"(e.g. MCPGATE_EXTRA_SCOPES='{scope}=What it lets a client do'); known: {', '.join(sorted(known))}",
                Field.SCOPES,
            )
    return wanted


def _check_groups(groups: Iterable[str]) -> list[str]:
    cleaned = sorted({g.strip() for g in groups if g.strip()})
    for group in cleaned:
        if len(group) > 200 or any(c in group for c in ",\r\n\0"):
            raise UpstreamInvalid(f"group {group[:60]!r} is not an oauth2-proxy group name", Field.GROUPS)
    return cleaned


def _check_timeout(timeout: float) -> float:
    if not 0 < timeout <= MAX_TIMEOUT:
        raise UpstreamInvalid(
            f"--timeout must be more than 0 and at most {MAX_TIMEOUT:g} seconds, not {timeout:g}", Field.TIMEOUT
        )
    return float(timeout)


def _check_assertion_header(header: str, *, transport: str, headers: Iterable[str]) -> str:
    """``--identity-assertion HEADER``: a header of its own, on a Streamable HTTP upstream (gateway.assertions).

    It carries the JWT as its whole value, so it is not ``Authorization`` (whose value is a scheme and
    credentials, RFC 9110 §11.6.2), nor a header mcpgate or the operator sets already. The SDK sends
    per-request headers on Streamable HTTP only (gateway.percall).
    """
    header = header.strip()
    if not header:
        return ""
    option = f"--identity-assertion {header[:60]}"
    if not _HEADER_NAME.match(header) or len(header) > 100:
        raise UpstreamInvalid(f"{option}: not a header name (RFC 9110 token characters)", Field.IDENTITY_ASSERTION)
    if transport != Transport.STREAMABLE_HTTP:
        raise UpstreamInvalid(
            f"{option}: applies to Streamable HTTP upstreams (--url without --sse)", Field.IDENTITY_ASSERTION
        )
    lowered = header.lower()
    if lowered in _RESERVED_HEADERS or lowered in ("authorization", "cookie"):
        raise UpstreamInvalid(
            f"{option}: mcpgate or HTTP gives that header its own meaning; name one of your own, "
            "e.g. X-Mcpgate-Identity",
            Field.IDENTITY_ASSERTION,
        )
    if lowered in {name.lower() for name in headers}:
        raise UpstreamInvalid(f"{option}: already configured with --header", Field.IDENTITY_ASSERTION)
    return header


def _check_credential(credential: str, *, transport: str, headers: Iterable[str]) -> Credential:
    """Per person (gateway.connections): each call carries the caller's own ``Authorization``, which only
    Streamable HTTP sends per request (gateway.percall), and which the operator's headers must leave free."""
    try:
        kind = Credential(credential)
    except ValueError:
        choices = ", ".join(choice.value for choice in Credential)
        raise UpstreamInvalid(
            f"credential must be one of {choices}, not {credential[:40]!r}", Field.CREDENTIAL
        ) from None
    if not kind.per_person:
        return kind
    option = "--per-person-oauth" if kind is Credential.PERSON_OAUTH else "--per-person-token"
    if transport != Transport.STREAMABLE_HTTP:
        raise UpstreamInvalid(f"{option}: applies to Streamable HTTP upstreams (--url without --sse)", Field.CREDENTIAL)
    if "authorization" in {name.lower() for name in headers}:
        raise UpstreamInvalid(
            f"{option}: each person's own token goes in Authorization; drop --header Authorization", Field.HEADERS
        )
    _sealed({"check": "the key is there"})  # people's tokens are sealed with MCPGATE_UPSTREAM_KEYS
    return kind


def _apply_oauth(upstream: Upstream, kind: Credential, oauth: OAuthSettings | None) -> None:
    """The OAuth client fields of ``upstream``: set from ``oauth``, required for per-person OAuth, and
    cleared for any other credential (nothing of it is kept where nothing uses it)."""
    if kind is not Credential.PERSON_OAUTH:
        upstream.oauth_client_id = upstream.authorization_url = upstream.token_url = upstream.oauth_issuer = ""
        upstream.sealed_oauth_client_secret, upstream.upstream_scopes = "", []
        return
    if oauth is not None:
        upstream.oauth_client_id = oauth.client_id
        upstream.authorization_url, upstream.token_url = oauth.authorization_url, oauth.token_url
        upstream.oauth_issuer, upstream.upstream_scopes = oauth.issuer, list(oauth.scopes)
        if oauth.client_secret is not None:
            secret = {"secret": oauth.client_secret} if oauth.client_secret else {}
            upstream.sealed_oauth_client_secret = _sealed(secret)
    if not (upstream.oauth_client_id and upstream.authorization_url and upstream.token_url):
        raise UpstreamInvalid("--per-person-oauth: needs --client-id and the authorization server's URLs", Field.OAUTH)


def _check_token_pattern(pattern: str, *, credential: Credential) -> str:
    """``--token-pattern REGEX``: what a pasted token must match in full (Python ``re``), to catch a token
    of the wrong service or a half-copied one before it is stored."""
    pattern = pattern.strip()
    if not pattern:
        return ""
    option = "--token-pattern"
    if credential is not Credential.PERSON_TOKEN:
        raise UpstreamInvalid(f"{option}: applies with --per-person-token", Field.TOKEN_PATTERN)
    if len(pattern) > 500:
        raise UpstreamInvalid(f"{option}: at most 500 characters", Field.TOKEN_PATTERN)
    try:
        re.compile(pattern)
    except re.error as exc:
        raise UpstreamInvalid(f"{option}: not a regular expression ({exc})", Field.TOKEN_PATTERN) from None
    return pattern


def _ensure_assertion_key() -> None:
    """The signing key exists before the first call needs it, so /.well-known/jwks.json has it already."""
    try:
        assertion_key_current()
    except KeyMissing as exc:
        raise UpstreamInvalid(f"--identity-assertion: {exc}", Field.KEYS) from None


def _sealed(values: Mapping[str, str]) -> str:
    try:
        return seal(dict(values))
    except KeyMissing as exc:
        raise UpstreamInvalid(str(exc), Field.KEYS) from None


def upstream_check_unprefixed(
    *,
    name: str,
    target: Target,
    headers: Mapping[str, str],
    env: Mapping[str, str],
    timeout: float,
    credential: str = Credential.SHARED,
) -> None:
    """An empty prefix: connect once and refuse if any of the upstream's names is taken already (a local
    tool's, or another upstream's in its stored catalog). Run outside an event loop (a command, a view).

    Not for a per-person upstream: it cannot be listed before someone connects an account, so its names
    cannot be checked now.
    """
    if credential != Credential.SHARED:
        raise UpstreamInvalid(
            '--prefix "": a per-person upstream cannot be listed before someone connects an account, so its '
            "names cannot be checked; give it a prefix",
            Field.PREFIX,
        )
    config = UpstreamConfig(
        id=0,
        name=name,
        prefix="",
        transport=target.transport,
        url=target.url,
        command=target.command,
        groups=frozenset(),
        scopes=frozenset(),
        timeout=timeout,
        updated_at=timezone.now(),
        headers=dict(headers),
        env=dict(env),
    )
    try:
        catalog = anyio.run(probe, config)
    except Exception as exc:  # any failure to reach it: the names cannot be checked
        raise UpstreamInvalid(
            f'--prefix "": cannot list the upstream\'s names to check them ({describe(exc)})', Field.PREFIX
        ) from None
    taken = sorted((set(catalog.tools) | set(catalog.prompts)) & exposed_names_elsewhere(exclude=name))
    if taken:
        raise UpstreamInvalid(f'--prefix "": these names are taken already: {", ".join(taken[:10])}', Field.PREFIX)


def _without_query(target: str) -> str:
    """A URL with its query cut (an operator may have put a key there against advice); a command as it is."""
    parts = urlsplit(target)
    if parts.scheme in ("http", "https") and parts.query:
        return urlunsplit(parts._replace(query="…"))
    return target


def _described(upstream: Upstream) -> dict[str, Any]:
    """An upstream in the audit trail and the commands' output: never a credential's value."""
    return {
        "name": upstream.name,
        "prefix": upstream.prefix,
        "transport": upstream.transport,
        "target": _without_query(upstream.target)[:300],
        "groups": upstream.groups,
        "scopes": upstream.scopes,
        "header_names": upstream.header_names,
        "env_names": upstream.env_names,
        "identity_assertion_header": upstream.identity_assertion_header,
        "credential": upstream.credential,
        "token_pattern": upstream.token_pattern,
        "oauth_client_id": upstream.oauth_client_id,
        "oauth_client_secret": bool(upstream.sealed_oauth_client_secret),
        "authorization_url": _without_query(upstream.authorization_url),
        "token_url": upstream.token_url,
        "upstream_scopes": upstream.upstream_scopes,
    }


def upstream_create(
    *,
    name: str,
    target: Target,
    prefix: str | None = None,
    groups: Iterable[str] = (),
    scopes: Iterable[str] = (),
    headers: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    identity_assertion_header: str = "",
    credential: str = Credential.SHARED,
    token_pattern: str = "",
    oauth: OAuthSettings | None = None,
    enabled: bool = True,
    local_tools: Iterable[str] = (),
    actor: User | None = None,
) -> Upstream:
    """A new upstream, saved and audited; every worker starts serving it within the poll interval."""
    _check_name(Field.NAME, name)
    prefix = name if prefix is None else prefix
    headers, env = dict(headers or {}), dict(env or {})
    if headers and target.transport == Transport.STDIO:
        raise UpstreamInvalid("--header applies to --url upstreams; give a stdio upstream --env instead", Field.HEADERS)
    if env and target.transport != Transport.STDIO:
        raise UpstreamInvalid("--env applies to --command upstreams; give an HTTP upstream --header instead", Field.ENV)
    assertion_header = _check_assertion_header(identity_assertion_header, transport=target.transport, headers=headers)
    kind = _check_credential(credential, transport=target.transport, headers=headers)
    token_pattern = _check_token_pattern(token_pattern, credential=kind)
    with transaction.atomic():
        if assertion_header:
            _ensure_assertion_key()
        if Upstream.objects.filter(name=name).exists():
            raise UpstreamInvalid(
                f"name {name!r} is taken: remove_upstream {name} first, or choose another", Field.NAME
            )
        _check_prefix(prefix, exclude=None, local_tools=local_tools)
        upstream = Upstream(
            name=name,
            prefix=prefix,
            transport=target.transport,
            url=target.url,
            command=list(target.command),
            header_names=sorted(headers),
            env_names=sorted(env),
            sealed_headers=_sealed(headers),
            sealed_env=_sealed(env),
            groups=_check_groups(groups),
            scopes=_check_scopes(scopes),
            timeout_seconds=_check_timeout(timeout),
            identity_assertion_header=assertion_header,
            credential=kind,
            token_pattern=token_pattern,
            enabled=enabled,
        )
        _apply_oauth(upstream, kind, oauth)
        try:
            upstream.save()
        except IntegrityError:  # a concurrent add of the same name or prefix
            raise UpstreamInvalid(f"name {name!r} or prefix {prefix!r} was taken meanwhile", Field.NAME) from None
        audit_record(event=AuditKind.UPSTREAM_ADDED, user=actor, detail=_described(upstream))
    return upstream


def upstream_update(
    *,
    upstream: Upstream,
    target: Target | None = None,
    prefix: str | None = None,
    groups: Iterable[str] | None = None,
    scopes: Iterable[str] | None = None,
    headers: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    identity_assertion_header: str | None = None,
    credential: str | None = None,
    token_pattern: str | None = None,
    oauth: OAuthSettings | None = None,
    enabled: bool | None = None,
    local_tools: Iterable[str] = (),
    actor: User | None = None,
) -> Upstream:
    """Change what is given (None keeps it); new ``headers``/``env`` replace the old ones whole.

    Refused, nothing changes: not the row, nor ``upstream`` as the caller holds it (a form shows it again).
    """
    try:
        return _update(
            upstream,
            target=target,
            prefix=prefix,
            groups=groups,
            scopes=scopes,
            headers=headers,
            env=env,
            timeout=timeout,
            identity_assertion_header=identity_assertion_header,
            credential=credential,
            token_pattern=token_pattern,
            oauth=oauth,
            enabled=enabled,
            local_tools=local_tools,
            actor=actor,
        )
    except UpstreamInvalid:
        upstream.refresh_from_db()
        raise


def _update(
    upstream: Upstream,
    *,
    target: Target | None,
    prefix: str | None,
    groups: Iterable[str] | None,
    scopes: Iterable[str] | None,
    headers: Mapping[str, str] | None,
    env: Mapping[str, str] | None,
    timeout: float | None,
    identity_assertion_header: str | None,
    credential: str | None,
    token_pattern: str | None,
    oauth: OAuthSettings | None,
    enabled: bool | None,
    local_tools: Iterable[str],
    actor: User | None,
) -> Upstream:
    with transaction.atomic():
        if target is not None:
            upstream.transport, upstream.url, upstream.command = target.transport, target.url, list(target.command)
        if prefix is not None and prefix != upstream.prefix:
            _check_prefix(prefix, exclude=upstream.pk, local_tools=local_tools)
            upstream.prefix = prefix
        if groups is not None:
            upstream.groups = _check_groups(groups)
        if scopes is not None:
            upstream.scopes = _check_scopes(scopes)
        if timeout is not None:
            upstream.timeout_seconds = _check_timeout(timeout)
        if enabled is not None:
            upstream.enabled = enabled
        if upstream.transport == Transport.STDIO:
            if upstream.header_names and headers is None:
                headers = {}
        elif upstream.env_names and env is None:
            env = {}
        if headers is not None:
            if headers and upstream.transport == Transport.STDIO:
                raise UpstreamInvalid(
                    "headers apply to HTTP upstreams; give a stdio upstream environment variables", Field.HEADERS
                )
            upstream.header_names, upstream.sealed_headers = sorted(headers), _sealed(headers)
        if env is not None:
            if env and upstream.transport != Transport.STDIO:
                raise UpstreamInvalid(
                    "environment variables apply to stdio upstreams; give an HTTP upstream headers", Field.ENV
                )
            upstream.env_names, upstream.sealed_env = sorted(env), _sealed(env)
        if identity_assertion_header is not None:
            upstream.identity_assertion_header = identity_assertion_header
        # Checked whenever kept too: a change of transport or headers may have made it wrong.
        upstream.identity_assertion_header = _check_assertion_header(
            upstream.identity_assertion_header, transport=upstream.transport, headers=upstream.header_names
        )
        if upstream.identity_assertion_header:
            _ensure_assertion_key()
        previous = upstream.credential
        if credential is not None:
            upstream.credential = credential
        if token_pattern is not None:
            upstream.token_pattern = token_pattern
        kind = _check_credential(upstream.credential, transport=upstream.transport, headers=upstream.header_names)
        upstream.credential = kind
        if kind is not Credential.PERSON_TOKEN:
            upstream.token_pattern = ""  # nothing is pasted any more
        if kind != previous:
            upstream.connections.all().delete()  # people's own tokens are not kept where nothing uses them
        upstream.token_pattern = _check_token_pattern(upstream.token_pattern, credential=kind)
        _apply_oauth(upstream, kind, oauth)
        try:
            upstream.save()
        except IntegrityError:
            raise UpstreamInvalid(f"prefix {upstream.prefix!r} was taken meanwhile", Field.PREFIX) from None
        audit_record(event=AuditKind.UPSTREAM_CHANGED, user=actor, detail=_described(upstream))
    return upstream


def upstream_remove(*, name: str, actor: User | None = None) -> None:
    """Remove an upstream; every worker stops serving it (and stops its process) within the poll interval."""
    with transaction.atomic():
        upstream = Upstream.objects.filter(name=name).first()
        if upstream is None:
            raise UpstreamInvalid(f"no upstream is named {name!r}", Field.NAME)
        detail = _described(upstream)
        upstream.delete()
        audit_record(event=AuditKind.UPSTREAM_REMOVED, user=actor, detail=detail)


def upstream_describe(upstream: Upstream) -> dict[str, Any]:
    """For ``list_upstreams`` and the add command's output."""
    return _described(upstream)
