"""Upstreams in the operators' console (issue 10): add, change, remove via the services; write-only credentials; health.

Olivia (MCPGATE_OPERATOR_EMAILS) works through oauth2-proxy on the internal host with CSRF enforced,
as in tests/console/test_admin.py; Alice is signed in but no operator. Every credential value used
here is checked to appear in no page the console renders afterwards.
"""

from __future__ import annotations

import re
import shlex
import socket
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent, AuditKind
from gateway.assertions import assertion_key_rotate
from gateway.crypto import unseal
from gateway.models import AssertionKey, Transport, Upstream, UpstreamStatus
from gateway.services import Target, UpstreamInvalid, parse_env, parse_header, upstream_create
from tests.conftest import ALICE, body_of
from tests.console.test_admin import Console
from tests.personas import OLIVIA

pytestmark = pytest.mark.django_db

BEARER = "Bearer s3cr3t-upstream-token-0123456789"
API_KEY = "env-secret-value-9876543210"
ADD = "admin:gateway_upstream_add"
CHANGELIST = "admin:gateway_upstream_changelist"
# A stdio MCP server on our own SDK, run with this interpreter (its names collide with nothing).
PLAIN_SERVER = (
    "from mcp.server.mcpserver import MCPServer; s = MCPServer('plain'); "
    "s.add_tool(lambda text: text, name='shout', description='Returns its argument.'); s.run('stdio')"
)


@pytest.fixture(autouse=True)
def console_settings(settings: Any) -> None:
    settings.MCPGATE_OPERATOR_EMAILS = [OLIVIA]
    settings.MCPGATE_UPSTREAM_KEYS = [Fernet.generate_key().decode()]
    settings.MCPGATE_SCOPES = {**settings.MCPGATE_SCOPES, "github:read": "Read the organisation's GitHub"}


@pytest.fixture
def olivia() -> Console:
    return Console(OLIVIA)


def closed_port() -> int:
    """A local port nothing listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def add_form(**fields: Any) -> dict[str, Any]:
    return {
        "name": "github",
        "tool_prefix": "",
        "transport": Transport.STREAMABLE_HTTP,
        "url": "https://mcp.github.example/mcp",
        "command": "",
        "groups": "",
        "timeout": "30",
        "headers": "",
        "env": "",
        "credential": "shared",
        **fields,
    }


def add(console: Console, **fields: Any) -> Any:
    return console.post(reverse(ADD), add_form(**fields))


def change_form(upstream: Upstream, **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "tool_prefix": "" if upstream.prefix == upstream.name else upstream.prefix,
        "transport": upstream.transport,
        "url": upstream.url,
        "command": shlex.join(upstream.command),
        "groups": ", ".join(upstream.groups),
        "scopes": list(upstream.scopes),
        "timeout": str(upstream.timeout_seconds),
        "enabled": "on" if upstream.enabled else "",
        "credential": upstream.credential,
        "token_pattern": upstream.token_pattern,
        "oauth_client_id": upstream.oauth_client_id,
        "authorization_url": upstream.authorization_url,
        "token_url": upstream.token_url,
        "upstream_scopes": " ".join(upstream.upstream_scopes),
        "headers": "",
        "env": "",
        **fields,
    }
    return {key: value for key, value in data.items() if value not in ("", None) or key in ("headers", "env")}


def change(console: Console, upstream: Upstream, **fields: Any) -> Any:
    return console.post(reverse("admin:gateway_upstream_change", args=[upstream.pk]), change_form(upstream, **fields))


def field_errors(page: Any) -> dict[str, list[str]]:
    """The form's errors, by field (``__all__`` for those above the form)."""
    form = page.context["form"]
    return {name: [str(m) for m in messages] for name, messages in form.errors.items()}


def http_upstream(name: str = "github", **kwargs: Any) -> Upstream:
    return upstream_create(
        name=name,
        target=Target(Transport.STREAMABLE_HTTP, url=f"https://{name}.example/mcp"),
        headers={"Authorization": BEARER},
        **kwargs,
    )


def stdio_upstream(name: str = "files") -> Upstream:
    return upstream_create(
        name=name, target=Target(Transport.STDIO, command=("npx", "-y", "server-files")), env={"API_KEY": API_KEY}
    )


# ---------------------------------------------------------------------------
# Adding
# ---------------------------------------------------------------------------
def test_adding_an_http_upstream_seals_its_header_audits_once_and_goes_back_to_the_list(olivia: Console) -> None:
    page = add(
        olivia, headers=f"Authorization: {BEARER}\nX-Team: platform", groups="eng, ops sre", scopes=["github:read"]
    )
    assert page.status_code == 302, field_errors(page)
    assert page["Location"] == reverse(CHANGELIST)
    upstream = Upstream.objects.get()
    assert (upstream.name, upstream.prefix, upstream.transport) == ("github", "github", Transport.STREAMABLE_HTTP)
    assert upstream.url == "https://mcp.github.example/mcp"
    assert upstream.groups == ["eng", "ops", "sre"]
    assert upstream.scopes == ["github:read"]
    assert upstream.header_names == ["Authorization", "X-Team"]
    assert BEARER not in upstream.sealed_headers
    assert unseal(upstream.sealed_headers) == {"Authorization": BEARER, "X-Team": "platform"}
    event = AuditEvent.objects.get(event=AuditKind.UPSTREAM_ADDED)
    assert event.email == OLIVIA
    assert event.detail["header_names"] == ["Authorization", "X-Team"]
    assert BEARER not in str(event.detail)
    assert AuditEvent.objects.filter(event__startswith="upstream_").count() == 1
    listing = olivia.get(reverse(CHANGELIST))
    assert "Added the upstream github" in listing.content.decode()


def test_adding_a_stdio_upstream_splits_its_command_like_a_shell_and_seals_its_environment(olivia: Console) -> None:
    command = "npx -y '@modelcontextprotocol/server-filesystem' '/srv/shared files'"
    page = add(olivia, name="files", transport=Transport.STDIO, url="", command=command, env=f"API_KEY={API_KEY}")
    assert page.status_code == 302, field_errors(page)
    upstream = Upstream.objects.get()
    assert upstream.command == ["npx", "-y", "@modelcontextprotocol/server-filesystem", "/srv/shared files"]
    assert upstream.env_names == ["API_KEY"]
    assert unseal(upstream.sealed_env) == {"API_KEY": API_KEY}


def test_a_legacy_sse_upstream_and_an_explicit_prefix(olivia: Console) -> None:
    page = add(olivia, name="legacy", transport=Transport.SSE, tool_prefix="old", url="http://10.0.0.5:8080/sse")
    assert page.status_code == 302, field_errors(page)
    upstream = Upstream.objects.get()
    assert (upstream.transport, upstream.prefix) == (Transport.SSE, "old")


def test_names_unprefixed_are_checked_against_the_upstreams_own_list(olivia: Console) -> None:
    command = shlex.join([sys.executable, "-c", PLAIN_SERVER])
    page = add(olivia, name="plain", unprefixed="on", transport=Transport.STDIO, url="", command=command)
    assert page.status_code == 302, field_errors(page)
    assert Upstream.objects.get().prefix == ""


def test_names_unprefixed_are_refused_when_one_is_a_local_tools(olivia: Console) -> None:
    command = shlex.join([sys.executable, "-m", "tests.gateway.upstreams.colliding_server"])
    page = add(olivia, name="colliding", unprefixed="on", transport=Transport.STDIO, url="", command=command)
    assert page.status_code == 200
    assert field_errors(page) == {"tool_prefix": ['--prefix "": these names are taken already: whoami']}
    assert not Upstream.objects.exists()


def refusal_of(parse: Callable[[str], Any], line: str) -> str:
    """The service's own one line for a bad credential line (worded by gateway.services, shown as is)."""
    with pytest.raises(UpstreamInvalid) as refused:
        parse(line)
    return str(refused.value)


REFUSALS = [
    pytest.param(
        {"url": "ftp://files.example/mcp"},
        {"url": ["--url must be an http:// or https:// URL, not 'ftp://files.example/mcp'"]},
        id="url-not-http",
    ),
    pytest.param(
        {"url": "https://me:pw@files.example/mcp"},
        {"url": ["--url must not carry a user or password; use --header for credentials"]},
        id="url-with-password",
    ),
    pytest.param({"url": ""}, {"url": ["An HTTP upstream needs its URL."]}, id="http-without-url"),
    pytest.param(
        {"command": "npx server"},
        {"command": ["An HTTP upstream has a URL, not a command: clear this field."]},
        id="http-with-command",
    ),
    pytest.param(
        {"transport": Transport.STDIO, "url": "", "command": ""},
        {"command": ["A stdio upstream needs the command that runs it."]},
        id="stdio-without-command",
    ),
    pytest.param(
        {"transport": Transport.STDIO, "command": "npx server"},
        {"url": ["A stdio upstream has a command, not a URL: clear this field."]},
        id="stdio-with-url",
    ),
    pytest.param(
        {"name": "GitHub"},
        {"name": ["name 'GitHub' must be 1-31 lower-case letters, digits and dashes (e.g. github)"]},
        id="bad-name",
    ),
    pytest.param(
        {"tool_prefix": "Git_Hub"},
        {"tool_prefix": ["prefix 'Git_Hub' must be 1-31 lower-case letters, digits and dashes (e.g. github)"]},
        id="bad-prefix",
    ),
    pytest.param(
        {"tool_prefix": "gh", "unprefixed": "on"},
        {"tool_prefix": ["Leave the prefix blank to expose the names unprefixed."]},
        id="prefix-and-unprefixed",
    ),
    pytest.param(
        {"headers": "Authorization Bearer s3cr3t-pasted-without-a-colon"},
        {"headers": [refusal_of(parse_header, "Authorization Bearer s3cr3t-pasted-without-a-colon")]},
        id="header-without-colon",
    ),
    pytest.param(
        {"headers": "Bad Name: s3cr3t-value"},
        {"headers": [refusal_of(parse_header, "Bad Name: s3cr3t-value")]},
        id="header-bad-name",
    ),
    pytest.param(
        {"headers": "Host: other.example"},
        {"headers": ["--header Host: set by mcpgate itself for every request; it cannot be configured"]},
        id="header-reserved",
    ),
    pytest.param(
        {"transport": Transport.STDIO, "url": "", "command": "npx server", "headers": f"Authorization: {BEARER}"},
        {"headers": ["--header applies to --url upstreams; give a stdio upstream --env instead"]},
        id="header-on-stdio",
    ),
    pytest.param(
        {"env": f"API_KEY={API_KEY}"},
        {"env": ["--env applies to --command upstreams; give an HTTP upstream --header instead"]},
        id="env-on-http",
    ),
    pytest.param(
        {"transport": Transport.STDIO, "url": "", "command": "npx server", "env": "1KEY=x-secret-value"},
        {"env": [refusal_of(parse_env, "1KEY=x-secret-value")]},
        id="env-bad-name",
    ),
    pytest.param(
        {"scopes": ["admin:everything"]},
        {"scopes": ["Select a valid choice. admin:everything is not one of the available choices."]},
        id="unknown-scope",
    ),
    pytest.param(
        {"timeout": "0"},
        {"timeout": ["--timeout must be more than 0 and at most 600 seconds, not 0"]},
        id="timeout-zero",
    ),
    pytest.param({"timeout": "soon"}, {"timeout": ["Enter a number."]}, id="timeout-not-a-number"),
    pytest.param(
        {"name": "x" * 32},
        {"name": ["Ensure this value has at most 31 characters (it has 32)."]},
        id="name-too-long",
    ),
]


@pytest.mark.parametrize(("fields", "errors"), REFUSALS)
def test_add_form_refusals_say_what_to_change_and_store_nothing(
    olivia: Console, fields: dict[str, Any], errors: dict[str, list[str]]
) -> None:
    page = add(olivia, **fields)
    assert page.status_code == 200
    assert field_errors(page) == errors
    assert b"nothing was saved" in page.content
    assert not Upstream.objects.exists()
    assert not AuditEvent.objects.filter(event__startswith="upstream_").exists()
    for secret in ("s3cr3t", API_KEY, BEARER, "x-secret-value", "pw@"):
        assert secret.encode() not in page.content


def test_a_taken_name_or_prefix_is_refused(olivia: Console) -> None:
    http_upstream("github")
    page = add(olivia)
    assert field_errors(page) == {"name": ["name 'github' is taken: remove_upstream github first, or choose another"]}
    page = add(olivia, name="github2", tool_prefix="github")
    assert field_errors(page) == {"tool_prefix": ["prefix 'github' is taken by the upstream 'github'"]}
    assert Upstream.objects.count() == 1


def test_credentials_are_refused_without_an_encryption_key(olivia: Console, settings: Any) -> None:
    settings.MCPGATE_UPSTREAM_KEYS = []
    page = add(olivia, headers=f"Authorization: {BEARER}")
    errors = field_errors(page)
    assert list(errors) == ["__all__"]
    assert errors["__all__"][0].startswith("MCPGATE_UPSTREAM_KEYS is not set")
    assert not Upstream.objects.exists()


def test_names_unprefixed_are_refused_when_the_upstream_cannot_be_listed(olivia: Console) -> None:
    page = add(olivia, unprefixed="on", url=f"http://127.0.0.1:{closed_port()}/mcp", timeout="5")
    message = field_errors(page)["tool_prefix"][0]
    assert message.startswith('--prefix "": cannot list the upstream\'s names to check them (')
    assert not Upstream.objects.exists()


def test_the_secret_fields_are_empty_when_the_form_comes_back_with_an_error(olivia: Console) -> None:
    page = add(olivia, name="Bad Name", headers=f"Authorization: {BEARER}")
    assert page.status_code == 200 and field_errors(page)
    html = page.content.decode()
    assert re.search(r'<textarea name="headers"[^>]*>\s*</textarea>', html)
    assert BEARER not in html


def test_add_form_fields_all_have_labels(olivia: Console) -> None:
    html = olivia.get(reverse(ADD)).content.decode()
    tags = re.findall(r"<(?:input|select|textarea)\b[^>]*>", html)
    fields = [t for t in tags if 'type="hidden"' not in t and 'type="submit"' not in t]
    assert len(fields) >= 9
    for tag in fields:
        field_id = re.search(r'\sid="([^"]+)"', tag)
        assert field_id and f'for="{field_id.group(1)}"' in html, tag


# ---------------------------------------------------------------------------
# Changing: credentials kept, replaced or cleared
# ---------------------------------------------------------------------------
def test_the_change_page_shows_the_stored_names_only(olivia: Console) -> None:
    upstream = http_upstream()
    page = olivia.get(reverse("admin:gateway_upstream_change", args=[upstream.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert "no-store" in page["Cache-Control"]
    assert "Stored: Authorization. Leave blank to keep; fill to replace all; tick &#x27;clear&#x27; to remove." in html
    assert BEARER not in html and "s3cr3t" not in html
    assert re.search(r'<textarea name="headers"[^>]*>\s*</textarea>', html)


def test_saving_with_blank_credentials_keeps_them(olivia: Console) -> None:
    upstream = http_upstream()
    page = change(olivia, upstream, groups="eng", timeout="12.5")
    assert page.status_code == 302, field_errors(page)
    upstream.refresh_from_db()
    assert upstream.groups == ["eng"] and upstream.timeout_seconds == 12.5
    assert unseal(upstream.sealed_headers) == {"Authorization": BEARER}
    changed = AuditEvent.objects.get(event=AuditKind.UPSTREAM_CHANGED)
    assert changed.email == OLIVIA and BEARER not in str(changed.detail)


def test_filling_the_headers_replaces_all_of_them(olivia: Console) -> None:
    upstream = http_upstream()
    page = change(olivia, upstream, headers="X-Api-Key: new-key-value-0123456789")
    assert page.status_code == 302, field_errors(page)
    upstream.refresh_from_db()
    assert upstream.header_names == ["X-Api-Key"]
    assert unseal(upstream.sealed_headers) == {"X-Api-Key": "new-key-value-0123456789"}


def test_ticking_clear_removes_the_stored_credentials(olivia: Console) -> None:
    upstream = stdio_upstream()
    page = change(olivia, upstream, clear_env="on")
    assert page.status_code == 302, field_errors(page)
    upstream.refresh_from_db()
    assert upstream.env_names == [] and upstream.sealed_env == ""


def test_clear_and_new_values_together_are_refused(olivia: Console) -> None:
    upstream = http_upstream()
    page = change(olivia, upstream, clear_headers="on", headers="X-Api-Key: another-value-0123456")
    assert field_errors(page) == {
        "headers": ["Either fill this to replace the stored values or tick 'clear', not both."]
    }
    upstream.refresh_from_db()
    assert unseal(upstream.sealed_headers) == {"Authorization": BEARER}
    assert not AuditEvent.objects.filter(event=AuditKind.UPSTREAM_CHANGED).exists()


def test_disabling_from_the_change_page_is_one_audited_change(olivia: Console) -> None:
    upstream = http_upstream()
    page = change(olivia, upstream, enabled="")
    assert page.status_code == 302, field_errors(page)
    upstream.refresh_from_db()
    assert not upstream.enabled
    assert AuditEvent.objects.filter(event=AuditKind.UPSTREAM_CHANGED).count() == 1


def test_a_refused_change_stores_nothing(olivia: Console) -> None:
    http_upstream("github")
    other = http_upstream("gitlab")
    page = change(olivia, other, tool_prefix="github")
    assert field_errors(page) == {"tool_prefix": ["prefix 'github' is taken by the upstream 'github'"]}
    other.refresh_from_db()
    assert other.prefix == "gitlab"
    assert not AuditEvent.objects.filter(event=AuditKind.UPSTREAM_CHANGED).exists()


def test_switching_to_stdio_drops_the_http_headers(olivia: Console) -> None:
    upstream = http_upstream()
    page = change(olivia, upstream, transport=Transport.STDIO, url="", command="uvx mcp-server-time")
    assert page.status_code == 302, field_errors(page)
    upstream.refresh_from_db()
    assert upstream.command == ["uvx", "mcp-server-time"] and upstream.url == ""
    assert upstream.header_names == [] and upstream.sealed_headers == ""


# ---------------------------------------------------------------------------
# Removing
# ---------------------------------------------------------------------------
def test_removing_from_its_page_goes_through_the_service(olivia: Console) -> None:
    upstream = http_upstream()
    url = reverse("admin:gateway_upstream_delete", args=[upstream.pk])
    page = olivia.post(url, {"post": "yes"})
    assert page.status_code == 302
    assert not Upstream.objects.exists()
    removed = AuditEvent.objects.get(event=AuditKind.UPSTREAM_REMOVED)
    assert removed.email == OLIVIA and removed.detail["name"] == "github"


def test_removing_several_with_the_action_audits_each(olivia: Console) -> None:
    ids = [http_upstream("github").pk, http_upstream("gitlab").pk]
    page = olivia.post(
        reverse(CHANGELIST), {"action": "delete_selected", "_selected_action": [str(i) for i in ids], "post": "yes"}
    )
    assert page.status_code == 302
    assert not Upstream.objects.exists()
    names = AuditEvent.objects.filter(event=AuditKind.UPSTREAM_REMOVED).values_list("detail__name", flat=True)
    assert sorted(names) == ["github", "gitlab"]


# ---------------------------------------------------------------------------
# Health
# ---------------------------------------------------------------------------
def cell(html: str, upstream: str, column: str) -> str:
    """The text of one changelist cell (tags removed)."""
    row = re.search(rf"<tr[^>]*>(?:(?!</tr>).)*>{upstream}</a>(?:(?!</tr>).)*</tr>", html, re.S)
    assert row, upstream
    found = re.search(rf'class="field-{column}[^"]*">(.*?)</td>', row.group(0), re.S)
    assert found, column
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", found.group(1))).strip()


def test_health_column_says_ok_failing_or_never_connected(olivia: Console) -> None:
    now = timezone.now()
    ok, failing = http_upstream("ok"), http_upstream("down")
    http_upstream("new")
    tools = {
        "tools": [{"name": "a", "inputSchema": {"type": "object"}}, {"name": "b", "inputSchema": {"type": "object"}}]
    }
    UpstreamStatus.objects.create(upstream=ok, last_success_at=now, latency_ms=3.4, catalog=tools, catalog_at=now)
    UpstreamStatus.objects.create(
        upstream=failing,
        last_success_at=now - timedelta(minutes=10),
        last_error="ConnectError: All connection attempts failed",
        last_error_at=now - timedelta(minutes=1),
        latency_ms=8.0,
        catalog=tools,
        catalog_at=now - timedelta(minutes=10),
    )
    html = olivia.get(reverse(CHANGELIST)).content.decode()
    assert cell(html, "ok", "health").startswith("OK at ")
    assert cell(html, "ok", "latency") == "3 ms"
    assert cell(html, "ok", "tools") == "2"
    down = cell(html, "down", "health")
    assert down.startswith("failing since ") and down.endswith(": ConnectError: All connection attempts failed")
    assert cell(html, "down", "tools").startswith("2 (stale: the last good list, from ")
    assert cell(html, "new", "health") == "never connected"
    assert cell(html, "new", "latency") == "—" and cell(html, "new", "tools") == "—"
    assert cell(html, "ok", "target_shown") == "https://ok.example/mcp"


def test_the_list_shows_no_credential_nor_a_urls_query(olivia: Console) -> None:
    upstream_create(name="keyed", target=Target(Transport.STREAMABLE_HTTP, url="https://k.example/mcp?key=abc123xyz"))
    html = olivia.get(reverse(CHANGELIST)).content.decode()
    assert cell(html, "keyed", "target_shown") == "https://k.example/mcp?…"
    assert "abc123xyz" not in html


def test_the_overview_lists_failing_upstreams_with_a_link(olivia: Console) -> None:
    healthy, broken = http_upstream("ok"), http_upstream("down")
    now = timezone.now()
    UpstreamStatus.objects.create(upstream=healthy, last_success_at=now)
    UpstreamStatus.objects.create(upstream=broken, last_error="ConnectError: refused", last_error_at=now)
    page = olivia.get("/admin/")
    html = page.content.decode()
    assert "1 of 2 enabled upstreams failing" in html
    link = reverse("admin:gateway_upstream_change", args=[broken.pk])
    assert re.search(rf'<a href="{link}">down</a>:\s+failing since [^<]*: ConnectError: refused', html)
    assert reverse("admin:gateway_upstream_change", args=[healthy.pk]) not in html


def test_the_overview_says_when_every_upstream_answers(olivia: Console) -> None:
    UpstreamStatus.objects.create(upstream=http_upstream("ok"), last_success_at=timezone.now())
    assert "All 1 enabled upstream answered at their last try." in olivia.get("/admin/").content.decode()


def test_upstream_changelist_queries_do_not_grow_with_rows(olivia: Console, django_assert_max_num_queries: Any) -> None:
    olivia.get("/admin/")
    for i in range(3):
        UpstreamStatus.objects.create(upstream=http_upstream(f"u{i}"), last_success_at=timezone.now())
    with django_assert_max_num_queries(9):
        assert olivia.get(reverse(CHANGELIST)).status_code == 200
    for i in range(3, 15):
        http_upstream(f"u{i}")
    with django_assert_max_num_queries(9):
        assert olivia.get(reverse(CHANGELIST)).status_code == 200


# ---------------------------------------------------------------------------
# Who may, and what is never shown
# ---------------------------------------------------------------------------
def test_non_operators_are_refused_every_upstream_page(olivia: Console) -> None:
    upstream = http_upstream()
    alice = Console(ALICE)
    for url in (
        reverse(CHANGELIST),
        reverse(ADD),
        reverse("admin:gateway_upstream_change", args=[upstream.pk]),
        reverse("admin:gateway_upstream_delete", args=[upstream.pk]),
    ):
        assert alice.get(url, follow=True).status_code == 403, url
    posted = alice.http.post(reverse(ADD), add_form(name="sneaky"), **alice.headers, follow=True)
    assert posted.status_code == 403
    assert list(Upstream.objects.values_list("name", flat=True)) == ["github"]


def test_no_credential_value_appears_on_any_page_after_saving(olivia: Console) -> None:
    assert add(olivia, headers=f"Authorization: {BEARER}").status_code == 302
    command = "npx -y server-files"
    assert add(olivia, name="files", transport=Transport.STDIO, url="", command=command, env=f"API_KEY={API_KEY}")
    github, files = Upstream.objects.get(name="github"), Upstream.objects.get(name="files")
    assert change(olivia, github, headers=f"Authorization: {BEARER}-2").status_code == 302
    events = AuditEvent.objects.filter(event__startswith="upstream_")
    assert events.count() == 3
    pages = [
        "/admin/",
        reverse(CHANGELIST),
        reverse("admin:gateway_upstream_change", args=[github.pk]),
        reverse("admin:gateway_upstream_change", args=[files.pk]),
        reverse("admin:gateway_upstream_delete", args=[github.pk]),
        reverse("admin:gateway_upstream_history", args=[github.pk]),
        reverse("admin:audit_auditevent_changelist"),
        *(reverse("admin:audit_auditevent_change", args=[e.pk]) for e in events),
        reverse("admin:audit_auditevent_export"),
    ]
    for url in pages:
        page = olivia.get(url)
        assert page.status_code == 200, url
        body = body_of(page)
        for secret in (BEARER, API_KEY, "s3cr3t"):
            assert secret.encode() not in body, (url, secret)
    assert "API_KEY" in olivia.get(pages[3]).content.decode()  # the name is shown


def test_switching_to_unprefixed_checks_the_names_with_the_stored_credentials(olivia: Console) -> None:
    command = shlex.join([sys.executable, "-c", PLAIN_SERVER])
    upstream = upstream_create(
        name="plain", target=Target(Transport.STDIO, command=tuple(shlex.split(command))), env={"TOKEN": API_KEY}
    )
    page = change(olivia, upstream, unprefixed="on")
    assert page.status_code == 302, field_errors(page)
    upstream.refresh_from_db()
    assert upstream.prefix == "" and unseal(upstream.sealed_env) == {"TOKEN": API_KEY}


# ---------------------------------------------------------------------------
# The identity assertion header (gateway.assertions)
# ---------------------------------------------------------------------------
def test_the_identity_assertion_header_is_set_changed_and_refused_on_the_forms(olivia: Console) -> None:
    page = add(olivia, identity_assertion_header="X-Mcpgate-Identity")
    assert page.status_code == 302, field_errors(page)
    upstream = Upstream.objects.get()
    assert upstream.identity_assertion_header == "X-Mcpgate-Identity"
    assert (
        "X-Mcpgate-Identity"
        in olivia.get(reverse("admin:gateway_upstream_change", args=[upstream.pk])).content.decode()
    )

    page = change(olivia, upstream, identity_assertion_header="Authorization")
    assert field_errors(page) == {
        "identity_assertion_header": [
            "--identity-assertion Authorization: mcpgate or HTTP gives that header its own meaning; name one of "
            "your own, e.g. X-Mcpgate-Identity"
        ]
    }
    assert Upstream.objects.get().identity_assertion_header == "X-Mcpgate-Identity"

    page = change(olivia, upstream, identity_assertion_header="")
    assert page.status_code == 302, field_errors(page)
    assert Upstream.objects.get().identity_assertion_header == ""


def test_the_assertion_keys_are_listed_with_their_state_read_only_and_without_their_private_half(
    olivia: Console,
) -> None:
    http_upstream("tickets", identity_assertion_header="X-Mcpgate-Identity")
    signing = AssertionKey.objects.get()
    upcoming = assertion_key_rotate()

    page = olivia.get(reverse("admin:gateway_assertionkey_changelist"))
    text = page.content.decode()

    assert page.status_code == 200
    assert signing.kid in text and upcoming.kid in text
    assert "signing" in text and f"published; signs from {upcoming.activates_at:%Y-%m-%d %H:%M} UTC" in text
    assert "PRIVATE" not in text and signing.sealed_private_key not in text
    assert olivia.get(reverse("admin:gateway_assertionkey_add")).status_code == 403
    detail = olivia.get(reverse("admin:gateway_assertionkey_change", args=[signing.pk])).content.decode()
    assert signing.sealed_private_key not in detail and "P-256" in detail  # the public JWK, shown


def test_whose_account_and_the_token_pattern_are_set_changed_and_refused_on_the_forms(olivia: Console) -> None:
    page = add(olivia, credential="person_token", token_pattern=r"lin_api_\w{40}")
    assert page.status_code == 302, field_errors(page)
    upstream = Upstream.objects.get()
    assert (upstream.credential, upstream.token_pattern) == ("person_token", r"lin_api_\w{40}")
    shown = olivia.get(reverse("admin:gateway_upstream_change", args=[upstream.pk])).content.decode()
    assert 'value="person_token" selected' in shown and r"lin_api_\w{40}" in shown

    page = change(olivia, upstream, token_pattern="lin_api_[")
    assert field_errors(page) == {
        "token_pattern": ["--token-pattern: not a regular expression (unterminated character set at position 8)"]
    }
    page = change(olivia, upstream, headers="Authorization: Bearer shared")
    assert field_errors(page) == {
        "headers": ["--per-person-token: each person's own token goes in Authorization; drop --header Authorization"]
    }
    assert Upstream.objects.get().token_pattern == r"lin_api_\w{40}"

    page = change(olivia, upstream, credential="shared")
    assert page.status_code == 302, field_errors(page)
    assert (Upstream.objects.get().credential, Upstream.objects.get().token_pattern) == ("shared", "")


def test_per_person_oauth_is_set_on_the_form_with_its_secret_written_once(olivia: Console) -> None:
    page = add(
        olivia,
        credential="person_oauth",
        oauth_client_id="mcpgate",
        oauth_client_secret="tickets-secret",
        authorization_url="https://auth.example/authorize",
        token_url="https://auth.example/token",
        upstream_scopes="tickets read",
    )
    assert page.status_code == 302, field_errors(page)
    upstream = Upstream.objects.get()
    assert (upstream.oauth_client_id, upstream.upstream_scopes) == ("mcpgate", ["tickets", "read"])
    assert unseal(upstream.sealed_oauth_client_secret) == {"secret": "tickets-secret"}
    shown = olivia.get(reverse("admin:gateway_upstream_change", args=[upstream.pk])).content.decode()
    assert "tickets-secret" not in shown and "https://auth.example/authorize" in shown

    page = change(olivia, upstream, oauth_client_id="mcpgate", upstream_scopes="tickets")  # secret left blank: kept
    assert page.status_code == 302, field_errors(page)
    assert unseal(Upstream.objects.get().sealed_oauth_client_secret) == {"secret": "tickets-secret"}
    assert Upstream.objects.get().upstream_scopes == ["tickets"]

    page = change(olivia, upstream, oauth_client_id="mcpgate", token_url="")
    assert field_errors(page) == {
        "oauth_client_id": [
            "--per-person-oauth: give both --authorization-url and --token-url, or neither (then they are discovered)"
        ]
    }
