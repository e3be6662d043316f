"""Each worker's connections to the upstreams, kept open, listed, healed and reported (the hub and its links).

How upstreams are run (one worker = one gunicorn/uvicorn worker process):

- Every worker holds one MCP client session per enabled upstream (``gateway.link.Link``, on the ``mcp``
  SDK's ``Client``), opened when the worker starts, reopened at once when it ends and with backoff
  (1 s doubling to 60 s) while connecting keeps failing. Every caller of the worker shares it.
- A stdio upstream is therefore one process per worker: two workers on two replicas run it four
  times. ``MCPGATE_UPSTREAM_STDIO_MAX`` bounds how many each worker starts. The processes stop with
  the worker (the SDK's stdio shutdown: close stdin, SIGTERM, SIGKILL, all bounded).
- HTTP upstreams share one connection pool per worker (``SharedPool``); each has its own headers
  and timeout.
- What an upstream offers is listed when its session opens, when it says its lists changed
  (``notifications/*/list_changed``) and every ``MCPGATE_UPSTREAM_REFRESH_SECONDS``. ``tools/list``
  answers from memory and never waits on an upstream; a worker that cannot reach one serves the
  last good catalog any worker stored (``UpstreamStatus.catalog``, marked stale in the console).
- Changes made at any replica reach every worker within ``MCPGATE_UPSTREAM_POLL_SECONDS`` (one
  indexed query per poll), and this worker's own at once (``gateway.hooks``).
- Health (last success, last error, latency) is kept in memory and written every few seconds, off
  the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio
import mcp_types as types
from django.conf import settings
from django.db import IntegrityError
from django.utils import timezone
from pydantic import ValidationError

from mcpgate.errors import TRANSIENT_DATABASE_ERRORS
from mcpgate.observability import metrics
from mcpgate.threads import in_worker_thread

from . import hooks
from .catalog import Catalog, scheme_of
from .link import Health, Link, SharedPool, UpstreamConfig, describe
from .models import Transport, Upstream, UpstreamStatus

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 3.0


@dataclass(frozen=True)
class Route:
    """Where an exposed name goes."""

    link: Link
    item: Any  # the types.Tool or types.Prompt as clients see it


@dataclass(frozen=True)
class Routes:
    """Every upstream's names merged, collisions resolved (a snapshot, replaced whole when anything changes)."""

    tools: dict[str, Route] = field(default_factory=dict)
    prompts: dict[str, Route] = field(default_factory=dict)
    links: tuple[Link, ...] = ()

    @classmethod
    def merge(cls, links: Iterable[Link], reserved: frozenset[str]) -> Routes:
        """Upstreams in name order; a name already taken (a local tool or an earlier upstream) is left
        out of the later upstream and noted on it (``Link.hidden``), never silently shadowing."""
        tools: dict[str, Route] = {}
        prompts: dict[str, Route] = {}
        ordered = sorted(links, key=lambda link: link.config.name)
        for link in ordered:
            hidden: list[str] = []
            catalog = link.catalog
            if catalog is None:
                link.hidden = ()
                continue
            for name, tool in catalog.tools.items():
                if name in reserved or name in tools:
                    hidden.append(name)
                else:
                    tools[name] = Route(link, tool)
            for name, prompt in catalog.prompts.items():
                if name in prompts:
                    hidden.append(f"prompt {name}")
                else:
                    prompts[name] = Route(link, prompt)
            link.hidden = tuple(hidden)
        return cls(tools=tools, prompts=prompts, links=tuple(ordered))

    def resource_link(self, uri: str, groups: frozenset[str]) -> Link | None:
        """The upstream a resource read goes to (see the module docstring of gateway.catalog)."""
        visible = [link for link in self.links if link.catalog is not None and link.config.visible_to(groups)]
        for link in visible:
            assert link.catalog is not None
            if uri in link.catalog.uris:
                return link
        for link in visible:
            assert link.catalog is not None
            if link.catalog.matches_template(uri):
                return link
        scheme = scheme_of(uri)
        owners = [link for link in visible if link.catalog is not None and scheme in link.catalog.schemes]
        return owners[0] if len(owners) == 1 else None


def load_upstreams() -> tuple[list[UpstreamConfig], dict[int, Catalog]]:
    """The enabled upstreams and the catalogs stored for them (in a worker thread)."""
    configs: list[UpstreamConfig] = []
    stored: dict[int, Catalog] = {}
    for upstream in Upstream.objects.filter(enabled=True).select_related("status"):
        config = UpstreamConfig.of(upstream)
        configs.append(config)
        status = getattr(upstream, "status", None)
        if status is not None and status.catalog:
            try:
                stored[upstream.pk] = Catalog.from_json(status.catalog, prefix=upstream.prefix)
            except ValidationError:
                logger.warning("upstream %s: the stored catalog is not readable; ignored", upstream.name)
    return configs, stored


def upstreams_fingerprint() -> tuple[tuple[int, datetime], ...]:
    """What changes when an upstream is added, changed, disabled or removed (one indexed query)."""
    return tuple(Upstream.objects.filter(enabled=True).order_by("pk").values_list("pk", "updated_at"))


def store_health(reports: list[tuple[int, Health]]) -> None:
    """Write what the workers saw (in a worker thread); a row removed meanwhile is skipped."""
    existing = set(Upstream.objects.filter(pk__in=[pk for pk, _ in reports]).values_list("pk", flat=True))
    for pk, health in reports:
        if pk not in existing:
            continue
        values: dict[str, Any] = {"protocol_version": health.protocol_version, "server_name": health.server_name}
        if health.last_success_at is not None:
            values["last_success_at"] = health.last_success_at
            values["latency_ms"] = health.latency_ms
        if health.last_error_at is not None:
            values["last_error_at"] = health.last_error_at
            values["last_error"] = health.last_error
        if health.catalog is not None:
            values["catalog"] = health.catalog
            values["catalog_at"] = timezone.now()
        try:
            UpstreamStatus.objects.update_or_create(upstream_id=pk, defaults=values)
        except IntegrityError:
            # Removed between the query above and this write (by an operator, in another process): the
            # foreign key refuses the row at commit. Nothing to record for it; the others are still written.
            logger.debug("health of upstream %s not written: it was removed meanwhile", pk)


class Hub:
    """This worker's upstreams. ``running()`` belongs in the ASGI lifespan; the rest is called by /mcp."""

    def __init__(self) -> None:
        self.links: dict[int, Link] = {}
        self.routes = Routes()
        self._pool: SharedPool | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._reload: anyio.Event = anyio.Event()
        self._fingerprint: tuple[tuple[int, datetime], ...] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Hub]:
        """Connect every enabled upstream (in the background) and follow changes until the worker stops."""
        self._pool = SharedPool()
        self._reload = anyio.Event()
        self._loop = asyncio.get_running_loop()
        hooks.listen(self._changed)
        try:
            async with anyio.create_task_group() as group:
                self._task_group = group
                group.start_soon(self._follow)
                try:
                    yield self
                finally:
                    await self._flush()
                    group.cancel_scope.cancel()
        finally:
            hooks.unlisten(self._changed)
            self._task_group = None
            self.links = {}
            self.routes = Routes()
            self._fingerprint = None
            await self._pool.close()

    def _changed(self) -> None:
        """From any thread of this process (``gateway.hooks``): reload now rather than at the next poll."""
        loop = self._loop
        if loop is None or self._task_group is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has stopped
            loop.call_soon_threadsafe(self._reload.set)

    async def _follow(self) -> None:
        """Reload when told, poll for changes made elsewhere, write health; until cancelled."""
        last_flush = time.monotonic()
        while True:
            try:
                fingerprint = await in_worker_thread(upstreams_fingerprint)()
                if fingerprint != self._fingerprint:
                    await self.reload()
                    self._fingerprint = fingerprint
                if time.monotonic() - last_flush >= FLUSH_SECONDS:
                    await self._flush()
                    last_flush = time.monotonic()
            except TRANSIENT_DATABASE_ERRORS as exc:
                logger.warning("upstreams not reloaded: database unavailable (%s)", describe(exc))
            except Exception:
                # A bug here must not take the worker (and every local tool) down with it.
                logger.exception("upstreams not reloaded")
            with anyio.move_on_after(settings.MCPGATE_UPSTREAM_POLL_SECONDS):
                await self._reload.wait()
            if self._reload.is_set():
                self._reload = anyio.Event()
                self._fingerprint = None  # reload even if the poll would not see a difference yet

    async def reload(self) -> None:
        """Start, restart and stop links to match the database."""
        configs, stored = await in_worker_thread(load_upstreams)()
        wanted = {config.id: config for config in configs}
        for pk in [pk for pk in self.links if pk not in wanted or self.links[pk].config != wanted[pk]]:
            self.links.pop(pk).scope.cancel()
        stdio_running = sum(1 for link in self.links.values() if link.config.transport == Transport.STDIO)
        for pk, config in wanted.items():
            if pk in self.links:
                if config.per_person:
                    self.links[pk].wake()  # someone may have connected: there may be a credential to list with now
                continue
            link = Link(config, pool=self._require_pool(), stored=stored.get(pk), on_catalog=self._rebuild)
            self.links[pk] = link
            if config.transport == Transport.STDIO:
                if stdio_running >= settings.MCPGATE_UPSTREAM_STDIO_MAX:
                    link._failed(
                        f"not started: this worker already runs MCPGATE_UPSTREAM_STDIO_MAX "
                        f"({settings.MCPGATE_UPSTREAM_STDIO_MAX}) stdio upstreams"
                    )
                    continue
                stdio_running += 1
            if self._task_group is not None:
                self._task_group.start_soon(link.run, name=f"upstream {config.name}")
        self._rebuild()

    def _require_pool(self) -> SharedPool:
        if self._pool is None:
            raise RuntimeError("the hub is not running")
        return self._pool

    def _rebuild(self) -> None:
        self.routes = Routes.merge(self.links.values(), hooks.reserved_names())

    async def _flush(self) -> None:
        reports = []
        for pk, link in self.links.items():
            if link.health.dirty:
                reports.append((pk, link.health))
                link.health = Health(protocol_version=link.health.protocol_version, server_name=link.health.server_name)
        for pk, health in reports:
            metrics.record_upstream_health(self.links[pk].config.name, up=health.last_error_at is None)
        if reports:
            try:
                await in_worker_thread(store_health)(reports)
            except TRANSIENT_DATABASE_ERRORS as exc:
                logger.warning("upstream health not written: database unavailable (%s)", describe(exc))

    async def connected(self, *, timeout: float = 10.0) -> None:
        """Wait until every upstream has been listed once or has failed (tests; a worker never waits)."""
        with anyio.fail_after(timeout):
            while any(link.stale and not link.tried for link in self.links.values()):
                await anyio.sleep(0.05)

    # -- what /mcp asks -----------------------------------------------------------------------

    def tools_for(self, groups: frozenset[str]) -> list[types.Tool]:
        return [route.item for route in self.routes.tools.values() if route.link.config.visible_to(groups)]

    def prompts_for(self, groups: frozenset[str]) -> list[types.Prompt]:
        return [route.item for route in self.routes.prompts.values() if route.link.config.visible_to(groups)]

    def resources_for(self, groups: frozenset[str]) -> list[types.Resource]:
        """Each URI once: where two upstreams list the same one, the first by name, which also serves reads."""
        seen: set[str] = set()
        resources = []
        for link in self._visible(groups):
            assert link.catalog is not None
            for resource in link.catalog.resources:
                if str(resource.uri) not in seen:
                    seen.add(str(resource.uri))
                    resources.append(resource)
        return resources

    def templates_for(self, groups: frozenset[str]) -> list[types.ResourceTemplate]:
        """Each URI template once, the first by upstream name (as for resources)."""
        seen: set[str] = set()
        templates = []
        for link in self._visible(groups):
            assert link.catalog is not None
            for template in link.catalog.templates:
                if template.uri_template not in seen:
                    seen.add(template.uri_template)
                    templates.append(template)
        return templates

    def _visible(self, groups: frozenset[str]) -> list[Link]:
        return [link for link in self.routes.links if link.catalog is not None and link.config.visible_to(groups)]

    def tool(self, name: str, groups: frozenset[str]) -> Link | None:
        """The upstream serving the tool ``name`` to someone in ``groups``, if any."""
        route = self.routes.tools.get(name)
        return route.link if route is not None and route.link.config.visible_to(groups) else None

    def prompt(self, name: str, groups: frozenset[str]) -> Link | None:
        route = self.routes.prompts.get(name)
        return route.link if route is not None and route.link.config.visible_to(groups) else None

    def resource(self, uri: str, groups: frozenset[str]) -> Link | None:
        return self.routes.resource_link(uri, groups)


hub = Hub()


def exposed_names_elsewhere(*, exclude: str) -> set[str]:
    """The tool and prompt names other upstreams expose, from their stored catalogs, and the local tools'."""
    names = set(hooks.reserved_names())
    for status in UpstreamStatus.objects.exclude(upstream__name=exclude).select_related("upstream"):
        if status.catalog:
            catalog = Catalog.from_json(status.catalog, prefix=status.upstream.prefix)
            names |= set(catalog.tools) | set(catalog.prompts)
    return names
