"""One upstream as a worker holds it (``Link``): its MCP client session on the ``mcp`` SDK, its catalog, its health.

A session is opened with the SDK's ``Client`` (``mode="auto"``: 2026-07-28's ``server/discover``, else the
``initialize`` handshake) over Streamable HTTP, legacy SSE or stdio, kept open and shared by every caller of the
worker (JSON-RPC ids keep concurrent calls apart), and reopened when it ends. Requests go out with the
upstream's own timeout and credentials, never the caller's; their failures come back as ``UpstreamFailed``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import anyio
import httpx2
import mcp_types as types
from django.conf import settings
from django.utils import timezone
from mcp.client.client import Client
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from mcpgate.observability import metrics
from mcpgate.threads import in_worker_thread

from .catalog import Catalog
from .connections import CredentialUnavailable, connect_path, listing_credential
from .crypto import KeyMissing, SealBroken, unseal
from .models import Credential, Transport, Upstream
from .percall import CREDENTIAL_FORBIDDEN, CREDENTIAL_REFUSED, Refusals, call_headers, with_call_headers

logger = logging.getLogger(__name__)

BACKOFF_START = 1.0
BACKOFF_MAX = 60.0
# What a stdio upstream inherits besides what the SDK's stdio client always passes on
# (mcp.client.stdio.DEFAULT_INHERITED_ENV_VARS: HOME, LOGNAME, PATH, SHELL, TERM, USER): the locale.
STDIO_INHERITED = ("LANG",)
# The SDK's stand-ins for an HTTP-level refusal (mcp.client.streamable_http): the session is gone (the server
# restarted or forgot it), which is no error of the upstream's to pass on.
SESSION_LOST = frozenset(
    {
        (types.INVALID_REQUEST, "Session terminated"),
        (types.INTERNAL_ERROR, "Server returned an error response"),
    }
)
LIST_CHANGED = (
    types.ToolListChangedNotification,
    types.PromptListChangedNotification,
    types.ResourceListChangedNotification,
)


class Failure(StrEnum):
    """Why a request through an upstream got no answer from it (the audit row's outcome)."""

    UNAVAILABLE = "upstream_unavailable"
    TIMEOUT = "upstream_timeout"
    INVALID_RESPONSE = "upstream_invalid_response"
    CREDENTIAL_REFUSED = "credential_refused"  # a person's own credential: HTTP 401
    FORBIDDEN = "upstream_forbidden"  # a person's own credential: HTTP 403


class NobodyConnected(Exception):
    """A per-person upstream cannot be listed before someone has connected an account to list it with."""

    def __init__(self) -> None:
        super().__init__("nobody has connected an account to list it with yet")


class UpstreamFailed(Exception):
    """The upstream did not answer usefully; ``message`` is written for the person."""

    def __init__(self, failure: Failure, message: str) -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message


# A URL's query string, which may carry a credential an operator put there against advice.
_URL_QUERY = re.compile(r"(https?://[^\s?#'\"]+)\?[^\s#'\"]*")


def describe(exc: BaseException) -> str:
    """One line about an error, for logs and the console: its type and first line, never a traceback,
    and any URL's query string cut off (httpx quotes URLs in its errors)."""
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return describe(exc.exceptions[0])
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    text = _URL_QUERY.sub(r"\1?…", text)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True)
class UpstreamConfig:
    """An upstream as one worker runs it: the row, credentials opened. Never logged (``repr`` omits them)."""

    id: int
    name: str
    prefix: str
    transport: Transport
    url: str
    command: tuple[str, ...]
    groups: frozenset[str]
    scopes: frozenset[str]
    timeout: float
    updated_at: datetime
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    env: dict[str, str] = field(default_factory=dict, repr=False)
    identity_assertion_header: str = ""  # gateway.assertions
    credential: Credential = Credential.SHARED  # gateway.connections
    problem: str = ""  # why it cannot be run (its credentials do not open)

    @property
    def per_person(self) -> bool:
        return self.credential.per_person

    @classmethod
    def of(cls, upstream: Upstream) -> UpstreamConfig:
        headers: dict[str, str] = {}
        env: dict[str, str] = {}
        problem = ""
        try:
            headers = unseal(upstream.sealed_headers)
            env = unseal(upstream.sealed_env)
        except (KeyMissing, SealBroken) as exc:
            problem = str(exc)
        return cls(
            id=upstream.pk,
            name=upstream.name,
            prefix=upstream.prefix,
            transport=Transport(upstream.transport),
            url=upstream.url,
            command=tuple(upstream.command),
            groups=frozenset(upstream.groups),
            scopes=frozenset(upstream.scopes),
            timeout=upstream.timeout_seconds,
            updated_at=upstream.updated_at,
            headers=headers,
            env=env,
            identity_assertion_header=upstream.identity_assertion_header,
            credential=Credential(upstream.credential),
            problem=problem,
        )

    def visible_to(self, groups: frozenset[str]) -> bool:
        """Limited to oauth2-proxy groups: only their members see it or reach it."""
        return not self.groups or bool(self.groups & groups)


@dataclass
class Health:
    """What this worker saw of an upstream since it last wrote it down."""

    last_success_at: datetime | None = None
    last_error: str = ""
    last_error_at: datetime | None = None
    latency_ms: float | None = None
    protocol_version: str = ""
    server_name: str = ""
    catalog: dict[str, Any] | None = None  # a newly listed catalog to store
    dirty: bool = False


class SharedPool(httpx2.AsyncBaseTransport):
    """One connection pool for every HTTP upstream of this worker.

    Each upstream's ``httpx2.AsyncClient`` (its headers, its timeout) sends through it; the SDK's
    transports close their client when a session ends, which must not close the pool.
    """

    def __init__(self) -> None:
        self._pool = httpx2.AsyncHTTPTransport(limits=httpx2.Limits(max_connections=200, max_keepalive_connections=50))

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return await self._pool.handle_async_request(request)

    async def aclose(self) -> None:
        """Not the pool: that closes with the hub (``close``)."""

    async def close(self) -> None:
        await self._pool.aclose()


def stdio_environment(configured: dict[str, str]) -> dict[str, str]:
    """What a stdio upstream gets on top of the SDK's short list: the locale and the operator's variables.

    Never mcpgate's own environment (SECRET_KEY, DATABASE_URL, MCPGATE_*): the SDK's stdio client
    starts from its own short list (``get_default_environment``), not from ``os.environ``.
    """
    inherited = {name: os.environ[name] for name in STDIO_INHERITED if name in os.environ}
    return {**inherited, **configured}


class Link:
    """One upstream as this worker holds it: the session, its catalog, its health."""

    def __init__(
        self, config: UpstreamConfig, *, pool: SharedPool, stored: Catalog | None, on_catalog: Callable[[], None]
    ):
        self.config = config
        self.catalog: Catalog | None = stored
        self.stale = True  # the catalog is not (yet) from this worker's own session
        self.client: Client | None = None
        self.health = Health()
        self.hidden: tuple[str, ...] = ()  # exposed names left out because they collide
        self.tried = False  # listed or failed at least once (Hub.connected)
        self.scope = anyio.CancelScope()
        self._pool = pool
        self._on_catalog = on_catalog
        self._refresh = anyio.Event()
        self._wake = anyio.Event()
        self._broken = False
        self._stored_digest = _digest(stored.to_json()) if stored is not None else ""
        if config.problem:
            self._failed(config.problem)

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Hold a session open until cancelled: a session that ends is reopened at once, a connection
        that keeps failing is retried with backoff (1 s doubling to 60 s)."""
        if self.config.problem:
            return
        backoff = 0.0
        with self.scope:
            while True:
                try:
                    async with AsyncExitStack() as stack:
                        with call_headers(await self._listing_headers()):
                            client = await stack.enter_async_context(self._client())
                        self._connected(client)
                        await self._list(client)
                        self.client = client
                        backoff = 0.0
                        await self._serve(client)
                except NobodyConnected:
                    self._failed(f"not listed: nobody has connected an account at {connect_path(self.config.name)} yet")
                    # Waiting costs one query; the first connection in this worker wakes it at once (Hub.reload).
                    backoff = settings.MCPGATE_UPSTREAM_POLL_SECONDS
                except Exception as exc:
                    self._failed(f"connection failed: {describe(exc)}")
                    logger.warning("upstream %s: %s", self.config.name, describe(exc))
                finally:
                    self.client = None
                    self.stale = True
                    self._on_catalog()
                with anyio.move_on_after(backoff):
                    await self._wake.wait()
                self._wake = anyio.Event()
                backoff = min(max(backoff * 2, BACKOFF_START), BACKOFF_MAX)

    def wake(self) -> None:
        """Retry now if waiting to reconnect (a person connected an account: there is a credential to list with)."""
        self._wake.set()

    async def _listing_headers(self) -> dict[str, str]:
        """What the handshake and the lists carry: for a per-person upstream, the credential of the person who
        used it last (what they are shown is what everyone allowed to use it is shown); else nothing extra."""
        if not self.config.per_person:
            return {}
        try:
            token = await in_worker_thread(listing_credential)(upstream_id=self.config.id)
        except CredentialUnavailable:
            token = None
        if token is None:
            raise NobodyConnected()
        return {"Authorization": f"Bearer {token}"}

    def _client(self) -> Client:
        config = self.config
        timeout = config.timeout
        transport: Any
        if config.transport == Transport.STDIO:
            program, *args = config.command
            transport = StdioServerParameters(command=program, args=args, env=stdio_environment(config.env))
        elif config.transport == Transport.SSE:

            def factory(
                headers: dict[str, str] | None = None, timeout: httpx2.Timeout | None = None, auth: Any = None
            ) -> httpx2.AsyncClient:
                return httpx2.AsyncClient(transport=self._pool, headers=headers, timeout=timeout, auth=auth)

            transport = sse_client(
                config.url, headers=dict(config.headers), timeout=timeout, httpx_client_factory=factory
            )
        else:
            http = httpx2.AsyncClient(
                # A person's refused credential is that person's error, not the shared session's (gateway.percall).
                transport=Refusals(self._pool) if config.per_person else self._pool,
                headers=dict(config.headers),
                timeout=httpx2.Timeout(timeout, read=max(timeout, 300.0)),
            )
            # Per-call headers (an identity assertion) go on the one request they are for (gateway.percall).
            transport = with_call_headers(streamable_http_client(config.url, http_client=http))
        return Client(
            transport,
            mode="auto",
            read_timeout_seconds=timeout,
            cache=None,  # the hub keeps the lists; nothing else is cached
            message_handler=self._on_message,
            client_info=types.Implementation(name="mcpgate", version=settings.MCPGATE_VERSION),
        )

    def _connected(self, client: Client) -> None:
        info = client.server_info
        self.health.protocol_version = client.protocol_version
        self.health.server_name = (info.name if info else "")[:200]

    async def _serve(self, client: Client) -> None:
        """List again when asked (list_changed, a failed call) or every refresh period; return when broken."""
        while True:
            with anyio.move_on_after(settings.MCPGATE_UPSTREAM_REFRESH_SECONDS):
                await self._refresh.wait()
            self._refresh = anyio.Event()
            if self._broken:
                self._broken = False
                raise ConnectionError("the session ended")
            await self._list(client)

    async def _on_message(self, message: Any) -> None:
        if isinstance(
            message,
            types.ToolListChangedNotification
            | types.PromptListChangedNotification
            | types.ResourceListChangedNotification,
        ):
            self._refresh.set()

    async def _list(self, client: Client) -> None:
        """Everything the upstream offers, every page, within its timeout."""
        started = time.perf_counter()
        session = client.session
        capabilities = client.server_capabilities
        with anyio.fail_after(self.config.timeout), call_headers(await self._listing_headers()):
            tools = await _every_page(session.list_tools) if capabilities.tools else []
            prompts = await _every_page(session.list_prompts) if capabilities.prompts else []
            resources = await _every_page(session.list_resources) if capabilities.resources else []
            templates = await _every_page(session.list_resource_templates) if capabilities.resources else []
        catalog = Catalog.build(
            prefix=self.config.prefix,
            tools=list(tools),
            prompts=list(prompts),
            resources=list(resources),
            templates=list(templates),
        )
        previous, self.catalog = self.catalog, catalog
        self.stale = False
        if previous is not None and set(previous.tools) != set(catalog.tools):
            # What an upstream offers can change after people consented to it ("rug pull"): say so.
            added, removed = (
                sorted(set(catalog.tools) - set(previous.tools)),
                sorted(set(previous.tools) - set(catalog.tools)),
            )
            logger.info(
                "upstream %s: tools changed: added %s, removed %s", self.config.name, added or "none", removed or "none"
            )
        stored = catalog.to_json()
        digest = _digest(stored)
        if digest != self._stored_digest:
            self._stored_digest = digest
            self.health.catalog = stored
        self._succeeded(started)
        self.tried = True
        self._on_catalog()

    # -- health -------------------------------------------------------------------------------

    def _succeeded(self, started: float) -> None:
        latency = round((time.perf_counter() - started) * 1000, 2)
        self.health.last_success_at = timezone.now()
        self.health.latency_ms = latency
        self.health.dirty = True
        metrics.record_upstream_call(self.config.name, outcome="ok", seconds=latency / 1000)

    def _failed(self, message: str, outcome: str = "error") -> None:
        self.tried = True
        self.health.last_error = message[:500]
        self.health.last_error_at = timezone.now()
        self.health.dirty = True
        metrics.record_upstream_call(self.config.name, outcome=outcome, seconds=0.0)

    def request_refresh(self, *, broken: bool = False) -> None:
        self._broken = self._broken or broken
        self._refresh.set()

    # -- requests -----------------------------------------------------------------------------

    async def call_tool(self, exposed: str, arguments: dict[str, Any]) -> types.CallToolResult:
        """tools/call under the upstream's own name; a JSON-RPC error of the upstream's passes on as is."""
        assert self.catalog is not None
        name = self.catalog.original_tool(exposed)
        result = await self._request(
            lambda session: session.call_tool(name, arguments, read_timeout_seconds=self.config.timeout)
        )
        if not isinstance(result, types.CallToolResult):
            raise UpstreamFailed(Failure.INVALID_RESPONSE, self._garbage())
        return result

    async def get_prompt(self, exposed: str, arguments: dict[str, str] | None) -> types.GetPromptResult:
        assert self.catalog is not None
        name = self.catalog.original_prompt(exposed)
        result = await self._request(lambda session: session.get_prompt(name, arguments))
        if not isinstance(result, types.GetPromptResult):
            raise UpstreamFailed(Failure.INVALID_RESPONSE, self._garbage())
        return result

    async def read_resource(self, uri: str) -> types.ReadResourceResult:
        result = await self._request(lambda session: session.read_resource(uri))
        if not isinstance(result, types.ReadResourceResult):
            raise UpstreamFailed(Failure.INVALID_RESPONSE, self._garbage())
        return result

    async def complete(self, params: types.CompleteRequestParams) -> types.CompleteResult:
        ref = params.ref
        if isinstance(ref, types.PromptReference) and self.catalog is not None:
            ref = ref.model_copy(update={"name": self.catalog.original_prompt(ref.name)})
        argument = {"name": params.argument.name, "value": params.argument.value}
        result = await self._request(
            lambda session: session.complete(ref, argument, context_arguments=_context(params))
        )
        if not isinstance(result, types.CompleteResult):
            raise UpstreamFailed(Failure.INVALID_RESPONSE, self._garbage())
        return result

    async def _request(self, send: Callable[[Any], Any]) -> Any:
        """One request to the upstream within its timeout; failures as ``UpstreamFailed``.

        An HTTP upstream that refused the session at the HTTP level (it restarted, or forgot it) did
        not run the request: it is sent once more on a new session, within the same timeout.
        """
        client = self.client
        name = self.config.name
        unavailable = f"The upstream {name} is unavailable; try again later."
        timed_out = f"The upstream {name} did not answer within {self.config.timeout:g} seconds."
        if client is None:
            raise UpstreamFailed(Failure.UNAVAILABLE, unavailable)
        started = time.perf_counter()
        try:
            with anyio.fail_after(self.config.timeout):
                try:
                    result = await send(client.session)
                except MCPError as exc:
                    if (exc.error.code, exc.error.message) not in SESSION_LOST:
                        raise
                    self.request_refresh(broken=True)
                    result = await send((await self._next_client(client)).session)
        except TimeoutError:
            self._failed(f"no answer within {self.config.timeout:g} s", "timeout")
            raise UpstreamFailed(Failure.TIMEOUT, timed_out) from None
        except MCPError as exc:
            if exc.error.code in (CREDENTIAL_REFUSED, CREDENTIAL_FORBIDDEN):
                # The upstream is fine; the person's credential is not (gateway.connections).
                self._succeeded(started)
                if exc.error.code == CREDENTIAL_REFUSED:
                    raise UpstreamFailed(Failure.CREDENTIAL_REFUSED, f"{name} refused your credential") from None
                raise UpstreamFailed(
                    Failure.FORBIDDEN, f"{name} refused this request for your account there (HTTP 403)"
                ) from None
            if exc.error.code == types.CONNECTION_CLOSED or (exc.error.code, exc.error.message) in SESSION_LOST:
                self._failed("the session ended", "unavailable")
                self.request_refresh(broken=True)
                raise UpstreamFailed(Failure.UNAVAILABLE, unavailable) from None
            if exc.error.code == types.REQUEST_TIMEOUT:
                self._failed(f"no answer within {self.config.timeout:g} s", "timeout")
                raise UpstreamFailed(Failure.TIMEOUT, timed_out) from None
            self._succeeded(started)  # it answered: with an error of its own, which the caller gets
            if self.config.transport != Transport.STDIO:
                # Or did it? An HTTP server that restarted may refuse the old session in its own words
                # (a JSON-RPC body on its 400); a relist tells, and a failed one reconnects (run()).
                self.request_refresh()
            raise
        except (ValidationError, ValueError, RuntimeError) as exc:
            self._failed(f"invalid answer: {describe(exc)}", "invalid_response")
            raise UpstreamFailed(Failure.INVALID_RESPONSE, self._garbage()) from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, httpx2.HTTPError, OSError) as exc:
            self._failed(f"connection failed: {describe(exc)}", "unavailable")
            self.request_refresh(broken=True)
            raise UpstreamFailed(Failure.UNAVAILABLE, unavailable) from None
        self._succeeded(started)
        return _without_upstream_stamp(result)

    async def _next_client(self, old: Client) -> Client:
        """The session ``run()`` opens after ``old`` (the caller's timeout bounds the wait)."""
        while self.client is None or self.client is old:
            await anyio.sleep(0.02)
        return self.client

    def _garbage(self) -> str:
        return f"The upstream {self.config.name} gave an answer that is not valid MCP; the error has been logged."


def _without_upstream_stamp(result: Any) -> Any:
    """The upstream's own ``serverInfo`` stamp (2026-07-28 ``_meta``) dropped: it would name the upstream to
    every caller and, for 2026-07-28 callers, stand in for mcpgate's (the SDK keeps a stamp a handler set)."""
    meta = getattr(result, "meta", None)
    if isinstance(meta, dict) and types.SERVER_INFO_META_KEY in meta:
        rest = {key: value for key, value in meta.items() if key != types.SERVER_INFO_META_KEY}
        return result.model_copy(update={"meta": rest or None})
    return result


def _context(params: types.CompleteRequestParams) -> dict[str, str] | None:
    return params.context.arguments if params.context is not None else None


def _digest(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


async def _every_page(list_page: Callable[..., Any]) -> list[Any]:
    """Follow ``nextCursor`` to the end (MCP "Pagination"), at most 100 pages."""
    items: list[Any] = []
    cursor: str | None = None
    for _ in range(100):
        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await list_page(params=params)
        items.extend(getattr(page, _items_field(page)))
        cursor = page.next_cursor
        if not cursor:
            break
    return items


def _items_field(page: Any) -> str:
    for name in ("tools", "prompts", "resources", "resource_templates"):
        if hasattr(page, name):
            return name
    raise ValueError(f"not a list result: {type(page).__name__}")


async def probe(config: UpstreamConfig) -> Catalog:
    """Connect once, list everything, disconnect (``add_upstream --prefix ""`` checks names before saving)."""
    pool = SharedPool()
    try:
        link = Link(config, pool=pool, stored=None, on_catalog=lambda: None)
        async with link._client() as client:
            await link._list(client)
        if link.catalog is None:  # _list sets it or raises
            raise RuntimeError("nothing was listed")
        return link.catalog
    finally:
        await pool.close()
