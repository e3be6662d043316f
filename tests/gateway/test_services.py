"""gateway.services: every rule an operator's upstream input must meet, each refusal's exact line, and the audit trail.

Olivia (an operator) adds, changes and removes upstreams; a refused input leaves no row and no audit
event, and no credential value ever reaches a refusal message or the audit trail.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.db import connection
from django.db.models.signals import pre_save
from django.utils import timezone

from audit.models import AuditEvent, AuditKind
from gateway.crypto import unseal
from gateway.link import Health
from gateway.models import Transport, Upstream, UpstreamStatus
from gateway.runtime import store_health
from gateway.services import (
    Field,
    Target,
    UpstreamInvalid,
    parse_env,
    parse_header,
    target_from,
    upstream_create,
    upstream_remove,
    upstream_update,
)
from oauth_ext.models import User
from oauth_ext.scopes import all_scopes
from tests.personas import OLIVIA

pytestmark = pytest.mark.django_db

SECRET = "sk-live-upstream-secret-0123456789"
OTHER_SECRET = "sk-live-replacement-secret-9876543210"
HTTP = Target(Transport.STREAMABLE_HTTP, url="https://mcp.example.net/mcp")
STDIO = Target(Transport.STDIO, command=("uvx", "mcp-server-time"))
LOCAL_TOOLS = ["whoami", "add_note", "list_notes"]


@pytest.fixture(autouse=True)
def upstream_key(settings: Any) -> str:
    """A Fernet key to seal credentials with, and one extra scope an upstream may require."""
    key = Fernet.generate_key().decode()
    settings.MCPGATE_UPSTREAM_KEYS = [key]
    settings.MCPGATE_SCOPES = {**settings.MCPGATE_SCOPES, "db:read": "Read the databases"}
    return key


@pytest.fixture
def olivia() -> User:
    return User.objects.create(username=OLIVIA, email=OLIVIA)


def refusal(action: Any, **kwargs: Any) -> str:
    """The one line ``action(**kwargs)`` is refused with."""
    with pytest.raises(UpstreamInvalid) as refused:
        action(**kwargs)
    message = str(refused.value)
    assert "\n" not in message
    return message


def audit_text() -> str:
    """Every audit row's detail, as one text to search for leaked values."""
    return json.dumps([event.detail for event in AuditEvent.objects.all()])


def nothing_stored() -> bool:
    return not Upstream.objects.exists() and not AuditEvent.objects.exists()


def kinds() -> list[str]:
    return [str(e.event) for e in AuditEvent.objects.order_by("pk")]


# ---------------------------------------------------------------------------
# Where the upstream is: target_from
# ---------------------------------------------------------------------------
def test_a_url_is_a_streamable_http_upstream() -> None:
    assert target_from(url="https://mcp.example.net/mcp?x=1", command=None) == Target(
        Transport.STREAMABLE_HTTP, url="https://mcp.example.net/mcp?x=1"
    )


def test_a_url_with_sse_is_a_legacy_sse_upstream() -> None:
    assert target_from(url="http://127.0.0.1:9000/sse", command=None, sse=True) == Target(
        Transport.SSE, url="http://127.0.0.1:9000/sse"
    )


def test_a_command_line_is_split_as_a_shell_would() -> None:
    target = target_from(url=None, command="npx -y '@scope/server name' --flag=\"a b\"")
    assert target == Target(Transport.STDIO, command=("npx", "-y", "@scope/server name", "--flag=a b"))


def test_a_command_may_be_given_as_its_arguments() -> None:
    assert target_from(url="", command=["uvx", "mcp-server-time"]) == STDIO


@pytest.mark.parametrize("url", ["ftp://mcp.example.net/mcp", "mcp.example.net/mcp", "http:///mcp", "file:///etc"])
def test_a_url_that_is_not_http_or_https_is_refused(url: str) -> None:
    assert refusal(target_from, url=url, command=None) == f"--url must be an http:// or https:// URL, not {url!r}"


@pytest.mark.parametrize("url", ["https://olivia:pw@mcp.example.net/mcp", "https://token@mcp.example.net/mcp"])
def test_a_url_carrying_a_user_or_password_is_refused_without_repeating_it(url: str) -> None:
    message = refusal(target_from, url=url, command=None)
    assert message == "--url must not carry a user or password; use --header for credentials"


def test_a_url_with_a_fragment_is_refused() -> None:
    message = refusal(target_from, url="https://mcp.example.net/mcp#tools", command=None)
    assert message == "--url must not have a #fragment"


@pytest.mark.parametrize(("url", "command"), [(None, None), ("", ""), ("https://a.example/mcp", "uvx server")])
def test_exactly_one_of_url_and_command_is_required(url: str | None, command: str | None) -> None:
    message = refusal(target_from, url=url, command=command)
    assert message == "give exactly one of --url (an HTTP upstream) or --command (a stdio upstream)"


def test_sse_with_a_command_is_refused() -> None:
    assert refusal(target_from, url=None, command="uvx server", sse=True) == "--sse applies to --url upstreams only"


def test_a_command_of_only_spaces_is_refused() -> None:
    assert refusal(target_from, url=None, command="   ") == "--command must name a program"


def test_a_command_with_a_nul_character_is_refused() -> None:
    message = refusal(target_from, url=None, command=["server", "a\0b"])
    assert message == "--command must not contain NUL characters"


# ---------------------------------------------------------------------------
# Headers and environment variables: parse_header, parse_env
# ---------------------------------------------------------------------------
def test_a_header_is_name_colon_value_with_spaces_trimmed() -> None:
    assert parse_header(f"  Authorization :  Bearer {SECRET}  ") == ("Authorization", f"Bearer {SECRET}")


def test_a_header_value_may_contain_colons() -> None:
    assert parse_header("X-Upstream: a:b:c") == ("X-Upstream", "a:b:c")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"Bad Name: {SECRET}", "Bad …"),
        (f"Authorization Bearer abc:{SECRET}", "Authorization …"),
        ("Authorization:", "Authorization: …"),
        ("Authorization:   ", "Authorization: …"),
        (f"X-Token={SECRET}", "X-Token= …"),
        (f"Authorization: Bearer {SECRET}\r\nX-Evil: 1", "Authorization: …"),
        (f": {SECRET}", ": …"),
    ],
    ids=[
        "space-in-name",
        "colon-inside-the-value",
        "no-value",
        "blank-value",
        "equals-not-colon",
        "line-break-in-value",
        "no-name",
    ],
)
def test_a_header_that_is_not_name_colon_value_is_refused_without_its_value(text: str, shown: str) -> None:
    message = refusal(parse_header, text=text)
    assert message == f"--header must be 'Name: value', not {shown!r}"
    assert SECRET not in message


def test_a_header_without_a_colon_is_refused_without_repeating_what_may_be_a_secret() -> None:
    """An operator who forgets the colon types the credential anyway: the refusal must not echo it."""
    message = refusal(parse_header, text=f"Authorization Bearer {SECRET}")
    assert message.startswith("--header must be 'Name: value', not ")
    assert SECRET not in message


@pytest.mark.parametrize("name", ["Host", "host", "Mcp-Session-Id", "MCP-Protocol-Version", "Content-Type", "Accept"])
def test_a_header_mcpgate_sets_itself_cannot_be_configured(name: str) -> None:
    message = refusal(parse_header, text=f"{name}: {SECRET}")
    assert message == f"--header {name}: set by mcpgate itself for every request; it cannot be configured"


def test_an_environment_variable_is_name_equals_value() -> None:
    assert parse_env(f"API_KEY={SECRET}") == ("API_KEY", SECRET)
    assert parse_env("EMPTY=") == ("EMPTY", "")
    assert parse_env("A=b=c") == ("A", "b=c")


@pytest.mark.parametrize(
    ("text", "shown"),
    [(f"1API={SECRET}", "1API= …"), (f"API-KEY={SECRET}", "API-KEY= …"), (f"={SECRET}", "= …")],
    ids=["starts-with-digit", "dash", "no-name"],
)
def test_an_environment_variable_that_is_not_name_equals_value_is_refused_without_its_value(
    text: str, shown: str
) -> None:
    message = refusal(parse_env, text=text)
    assert message == f"--env must be NAME=VALUE with NAME of letters, digits and _, not {shown!r}"
    assert SECRET not in message


def test_an_environment_variable_with_a_nul_character_is_refused_without_its_value() -> None:
    message = refusal(parse_env, text=f"API_KEY={SECRET}\0")
    assert message == "--env must be NAME=VALUE with NAME of letters, digits and _, not 'API_KEY= …'"


def test_an_environment_variable_without_equals_is_refused_without_repeating_what_may_be_a_secret() -> None:
    message = refusal(parse_env, text=f"API_KEY {SECRET}")
    assert message.startswith("--env must be NAME=VALUE with NAME of letters, digits and _, not ")
    assert SECRET not in message


# ---------------------------------------------------------------------------
# Adding: upstream_create refusals (nothing stored, nothing audited)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["GitHub", "-github", "git_hub", "git hub", "", "a" * 32, "gitühub"])
def test_a_name_outside_the_pattern_is_refused(name: str) -> None:
    message = refusal(upstream_create, name=name, target=HTTP)
    assert message == f"name {name!r} must be 1-31 lower-case letters, digits and dashes (e.g. github)"
    assert nothing_stored()


def test_the_longest_name_is_31_characters() -> None:
    assert upstream_create(name="a" * 31, target=HTTP).prefix == "a" * 31


@pytest.mark.parametrize("prefix", ["GH", "g_h", "-gh", "a" * 32])
def test_a_prefix_outside_the_pattern_is_refused(prefix: str) -> None:
    message = refusal(upstream_create, name="github", target=HTTP, prefix=prefix)
    assert message == f"prefix {prefix!r} must be 1-31 lower-case letters, digits and dashes (e.g. github)"
    assert nothing_stored()


def test_a_name_taken_is_refused_and_the_first_upstream_is_untouched() -> None:
    first = upstream_create(name="github", target=HTTP)
    message = refusal(upstream_create, name="github", target=STDIO, prefix="gh2")
    assert message == "name 'github' is taken: remove_upstream github first, or choose another"
    assert list(Upstream.objects.values_list("pk", "transport", "prefix")) == [
        (first.pk, Transport.STREAMABLE_HTTP, "github")
    ]
    assert kinds() == [AuditKind.UPSTREAM_ADDED]


def test_a_prefix_taken_by_another_upstream_is_refused() -> None:
    upstream_create(name="github", target=HTTP, prefix="gh")
    message = refusal(upstream_create, name="gitlab", target=HTTP, prefix="gh")
    assert message == "prefix 'gh' is taken by the upstream 'github'"
    assert list(Upstream.objects.values_list("name", flat=True)) == ["github"]
    assert kinds() == [AuditKind.UPSTREAM_ADDED]


def test_a_default_prefix_taken_by_another_upstream_is_refused() -> None:
    upstream_create(name="github", target=HTTP, prefix="gitlab")
    message = refusal(upstream_create, name="gitlab", target=HTTP)
    assert message == "prefix 'gitlab' is taken by the upstream 'github'"


def test_several_upstreams_may_have_an_empty_prefix() -> None:
    upstream_create(name="time", target=STDIO, prefix="")
    upstream_create(name="fetch", target=STDIO, prefix="")
    assert sorted(Upstream.objects.values_list("name", "prefix")) == [("fetch", ""), ("time", "")]


def test_a_prefix_that_would_clash_with_a_local_tool_is_refused() -> None:
    message = refusal(upstream_create, name="notes", target=HTTP, local_tools=[*LOCAL_TOOLS, "notes__x", "notes__a"])
    assert message == "prefix 'notes' would clash with the local tool 'notes__a'"
    assert nothing_stored()


def test_a_prefix_that_only_starts_like_a_local_tool_is_accepted() -> None:
    assert upstream_create(name="notes", target=HTTP, local_tools=["notes_x", "notesx__y"]).prefix == "notes"


def test_an_unknown_scope_is_refused_naming_the_known_ones() -> None:
    known = ", ".join(sorted(all_scopes()))
    message = refusal(upstream_create, name="github", target=HTTP, scopes=["db:write"])
    assert message == (
        "unknown scope 'db:write': declare it first in MCPGATE_EXTRA_SCOPES "
        f"(e.g. MCPGATE_EXTRA_SCOPES='db:write=What it lets a client do'); known: {known}"
    )
    assert "db:read" in known
    assert nothing_stored()


def test_scopes_are_stored_sorted_without_duplicates_or_mcp() -> None:
    upstream = upstream_create(name="github", target=HTTP, scopes=["db:read", "mcp", "db:read"])
    assert Upstream.objects.get(pk=upstream.pk).scopes == ["db:read"]


@pytest.mark.parametrize("group", ["eng,ops", "eng\nops", "g" * 201])
def test_a_group_that_is_not_an_oauth2_proxy_group_is_refused(group: str) -> None:
    message = refusal(upstream_create, name="github", target=HTTP, groups=[group])
    assert message == f"group {group[:60]!r} is not an oauth2-proxy group name"
    assert nothing_stored()


def test_groups_are_stored_trimmed_sorted_and_once() -> None:
    upstream = upstream_create(name="github", target=HTTP, groups=[" ops", "eng", "", "eng "])
    assert Upstream.objects.get(pk=upstream.pk).groups == ["eng", "ops"]


def test_headers_given_to_a_stdio_upstream_are_refused() -> None:
    message = refusal(upstream_create, name="time", target=STDIO, headers={"Authorization": SECRET})
    assert message == "--header applies to --url upstreams; give a stdio upstream --env instead"
    assert SECRET not in message
    assert nothing_stored()


def test_environment_variables_given_to_an_http_upstream_are_refused() -> None:
    message = refusal(upstream_create, name="github", target=HTTP, env={"API_KEY": SECRET})
    assert message == "--env applies to --command upstreams; give an HTTP upstream --header instead"
    assert nothing_stored()


@pytest.mark.parametrize(("timeout", "shown"), [(0, "0"), (-1, "-1"), (601, "601"), (600.5, "600.5")])
def test_a_timeout_outside_0_to_600_seconds_is_refused(timeout: float, shown: str) -> None:
    message = refusal(upstream_create, name="github", target=HTTP, timeout=timeout)
    assert message == f"--timeout must be more than 0 and at most 600 seconds, not {shown}"
    assert nothing_stored()


def test_the_timeout_bounds_themselves_are_accepted() -> None:
    assert upstream_create(name="slow", target=HTTP, timeout=600).timeout_seconds == 600.0
    assert upstream_create(name="fast", target=HTTP, timeout=0.5).timeout_seconds == 0.5


def test_credentials_without_a_key_are_refused_saying_how_to_make_one(settings: Any) -> None:
    settings.MCPGATE_UPSTREAM_KEYS = []
    message = refusal(upstream_create, name="github", target=HTTP, headers={"Authorization": SECRET})
    assert message.startswith("MCPGATE_UPSTREAM_KEYS is not set: upstream credentials are encrypted with it.")
    assert SECRET not in message
    assert nothing_stored()


def test_an_upstream_without_credentials_needs_no_key(settings: Any) -> None:
    settings.MCPGATE_UPSTREAM_KEYS = []
    upstream = upstream_create(name="github", target=HTTP)
    assert (upstream.sealed_headers, upstream.sealed_env) == ("", "")


# ---------------------------------------------------------------------------
# Adding: what is stored and audited
# ---------------------------------------------------------------------------
def test_an_added_http_upstream_keeps_header_names_and_seals_their_values(olivia: User) -> None:
    headers = {"X-Api-Key": OTHER_SECRET, "Authorization": f"Bearer {SECRET}"}
    upstream_create(name="github", target=HTTP, headers=headers, groups=["eng"], scopes=["db:read"], actor=olivia)
    stored = Upstream.objects.get(name="github")
    assert (stored.prefix, stored.transport, stored.url, stored.command) == ("github", "streamable_http", HTTP.url, [])
    assert stored.header_names == ["Authorization", "X-Api-Key"]
    assert (stored.env_names, stored.sealed_env) == ([], "")
    assert unseal(stored.sealed_headers) == headers
    assert SECRET not in stored.sealed_headers and OTHER_SECRET not in stored.sealed_headers
    assert (stored.groups, stored.scopes, stored.timeout_seconds, stored.enabled) == (["eng"], ["db:read"], 30.0, True)


def test_adding_writes_one_audit_row_describing_the_upstream_without_credentials(olivia: User) -> None:
    upstream_create(name="github", target=HTTP, headers={"Authorization": f"Bearer {SECRET}"}, actor=olivia)
    event = AuditEvent.objects.get()
    assert (event.event, event.user, event.email) == (AuditKind.UPSTREAM_ADDED, olivia, OLIVIA)
    assert event.detail == {
        "name": "github",
        "prefix": "github",
        "transport": "streamable_http",
        "target": HTTP.url,
        "groups": [],
        "scopes": [],
        "header_names": ["Authorization"],
        "env_names": [],
        "identity_assertion_header": "",
        "credential": "shared",
        "token_pattern": "",
        "oauth_client_id": "",
        "oauth_client_secret": False,
        "authorization_url": "",
        "token_url": "",
        "upstream_scopes": [],
    }
    assert SECRET not in audit_text()


def test_an_added_stdio_upstream_keeps_env_names_and_seals_their_values() -> None:
    upstream_create(name="time", target=STDIO, env={"TZ": "UTC", "API_KEY": SECRET}, prefix="")
    stored = Upstream.objects.get(name="time")
    assert (stored.transport, stored.command, stored.prefix) == ("stdio", ["uvx", "mcp-server-time"], "")
    assert stored.env_names == ["API_KEY", "TZ"]
    assert unseal(stored.sealed_env) == {"TZ": "UTC", "API_KEY": SECRET}
    assert (stored.header_names, stored.sealed_headers) == ([], "")
    event = AuditEvent.objects.get()
    assert event.event == AuditKind.UPSTREAM_ADDED and event.user is None
    assert event.detail["target"] == "uvx mcp-server-time" and event.detail["env_names"] == ["API_KEY", "TZ"]
    assert SECRET not in audit_text()


# ---------------------------------------------------------------------------
# Changing: upstream_update
# ---------------------------------------------------------------------------
def test_new_headers_replace_the_old_ones_whole(olivia: User) -> None:
    upstream = upstream_create(name="github", target=HTTP, headers={"Authorization": SECRET, "X-Old": "1"})
    upstream_update(upstream=upstream, headers={"X-Api-Key": OTHER_SECRET}, actor=olivia)
    stored = Upstream.objects.get(name="github")
    assert stored.header_names == ["X-Api-Key"]
    assert unseal(stored.sealed_headers) == {"X-Api-Key": OTHER_SECRET}
    assert kinds() == [AuditKind.UPSTREAM_ADDED, AuditKind.UPSTREAM_CHANGED]
    changed = AuditEvent.objects.get(event=AuditKind.UPSTREAM_CHANGED)
    assert changed.user == olivia and changed.detail["header_names"] == ["X-Api-Key"]
    assert SECRET not in audit_text() and OTHER_SECRET not in audit_text()


def test_headers_not_given_are_kept() -> None:
    upstream = upstream_create(name="github", target=HTTP, headers={"Authorization": SECRET})
    upstream_update(upstream=upstream, groups=["eng"], timeout=5)
    stored = Upstream.objects.get(name="github")
    assert (stored.groups, stored.timeout_seconds) == (["eng"], 5.0)
    assert stored.header_names == ["Authorization"]
    assert unseal(stored.sealed_headers) == {"Authorization": SECRET}


def test_empty_headers_remove_them() -> None:
    upstream = upstream_create(name="github", target=HTTP, headers={"Authorization": SECRET})
    upstream_update(upstream=upstream, headers={})
    stored = Upstream.objects.get(name="github")
    assert (stored.header_names, stored.sealed_headers) == ([], "")


def test_turning_an_http_upstream_into_a_stdio_one_drops_its_headers() -> None:
    upstream = upstream_create(name="github", target=HTTP, headers={"Authorization": SECRET})
    upstream_update(upstream=upstream, target=STDIO, env={"API_KEY": SECRET})
    stored = Upstream.objects.get(name="github")
    assert (stored.transport, stored.url, stored.command) == ("stdio", "", ["uvx", "mcp-server-time"])
    assert (stored.header_names, stored.sealed_headers) == ([], "")
    assert unseal(stored.sealed_env) == {"API_KEY": SECRET}


def test_turning_a_stdio_upstream_into_an_http_one_drops_its_environment() -> None:
    upstream = upstream_create(name="time", target=STDIO, env={"API_KEY": SECRET})
    upstream_update(upstream=upstream, target=HTTP)
    stored = Upstream.objects.get(name="time")
    assert (stored.transport, stored.env_names, stored.sealed_env) == ("streamable_http", [], "")


def test_a_prefix_change_is_checked_like_a_new_one() -> None:
    upstream_create(name="github", target=HTTP, prefix="gh")
    gitlab = upstream_create(name="gitlab", target=HTTP)
    assert refusal(upstream_update, upstream=gitlab, prefix="gh") == "prefix 'gh' is taken by the upstream 'github'"
    message = refusal(upstream_update, upstream=gitlab, prefix="notes", local_tools=["notes__add"])
    assert message == "prefix 'notes' would clash with the local tool 'notes__add'"
    assert Upstream.objects.get(name="gitlab").prefix == "gitlab"


def test_keeping_its_own_prefix_is_not_a_clash() -> None:
    upstream = upstream_create(name="github", target=HTTP, prefix="gh")
    upstream_update(upstream=upstream, prefix="gh", timeout=10)
    assert Upstream.objects.get(name="github").prefix == "gh"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"headers": {"Authorization": SECRET}},
            "headers apply to HTTP upstreams; give a stdio upstream environment variables",
        ),
        ({"timeout": 601.0}, "--timeout must be more than 0 and at most 600 seconds, not 601"),
        ({"scopes": ["db:write"]}, None),
        ({"groups": ["a,b"]}, "group 'a,b' is not an oauth2-proxy group name"),
    ],
    ids=["headers-to-stdio", "timeout", "scope", "group"],
)
def test_a_refused_change_of_a_stdio_upstream_changes_nothing(change: dict[str, Any], message: str | None) -> None:
    upstream = upstream_create(name="time", target=STDIO, env={"API_KEY": SECRET})
    refused = refusal(upstream_update, upstream=upstream, **change)
    if message is not None:
        assert refused == message
    else:
        assert refused.startswith("unknown scope 'db:write': declare it first in MCPGATE_EXTRA_SCOPES")
    assert SECRET not in refused
    stored = Upstream.objects.get(name="time")
    assert (stored.timeout_seconds, stored.groups, stored.scopes, stored.header_names) == (30.0, [], [], [])
    assert unseal(stored.sealed_env) == {"API_KEY": SECRET}
    assert kinds() == [AuditKind.UPSTREAM_ADDED]


def test_environment_variables_given_to_an_http_upstream_on_change_are_refused() -> None:
    upstream = upstream_create(name="github", target=HTTP)
    message = refusal(upstream_update, upstream=upstream, env={"API_KEY": SECRET})
    assert message == "environment variables apply to stdio upstreams; give an HTTP upstream headers"
    assert Upstream.objects.get(name="github").env_names == []
    assert kinds() == [AuditKind.UPSTREAM_ADDED]


def test_disabling_keeps_everything_else() -> None:
    upstream = upstream_create(name="github", target=HTTP, headers={"Authorization": SECRET})
    upstream_update(upstream=upstream, enabled=False)
    stored = Upstream.objects.get(name="github")
    assert stored.enabled is False
    assert unseal(stored.sealed_headers) == {"Authorization": SECRET}


# ---------------------------------------------------------------------------
# Removing: upstream_remove
# ---------------------------------------------------------------------------
def test_removing_deletes_the_row_and_audits_what_it_was(olivia: User) -> None:
    upstream_create(name="github", target=HTTP, headers={"Authorization": SECRET})
    upstream_remove(name="github", actor=olivia)
    assert not Upstream.objects.exists()
    assert kinds() == [AuditKind.UPSTREAM_ADDED, AuditKind.UPSTREAM_REMOVED]
    removed = AuditEvent.objects.get(event=AuditKind.UPSTREAM_REMOVED)
    assert removed.user == olivia
    assert removed.detail["name"] == "github" and removed.detail["header_names"] == ["Authorization"]
    assert SECRET not in audit_text()


def test_removing_an_unknown_upstream_is_refused() -> None:
    assert refusal(upstream_remove, name="ghost") == "no upstream is named 'ghost'"
    assert not AuditEvent.objects.exists()


def test_a_removed_upstreams_name_and_prefix_are_free_again() -> None:
    upstream_create(name="github", target=HTTP, prefix="gh")
    upstream_remove(name="github")
    upstream_create(name="github", target=STDIO, prefix="gh")
    assert Upstream.objects.get().transport == Transport.STDIO


def test_an_identity_assertion_header_is_kept_through_other_changes_and_refused_when_they_make_it_wrong() -> None:
    upstream = upstream_create(name="tickets", target=HTTP, identity_assertion_header="X-Mcpgate-Identity")

    upstream_update(upstream=upstream, timeout=10)
    assert Upstream.objects.get().identity_assertion_header == "X-Mcpgate-Identity"

    with pytest.raises(UpstreamInvalid, match="applies to Streamable HTTP upstreams") as refused:
        upstream_update(upstream=upstream, target=STDIO)
    assert refused.value.field == Field.IDENTITY_ASSERTION
    assert Upstream.objects.get().transport == Transport.STREAMABLE_HTTP

    upstream_update(upstream=upstream, identity_assertion_header="")
    assert Upstream.objects.get().identity_assertion_header == ""


# ---------------------------------------------------------------------------
# Health written for an upstream removed meanwhile (gateway.runtime.store_health)
# ---------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_health_of_an_upstream_removed_between_the_check_and_the_write_is_skipped_and_the_others_written() -> None:
    """An operator removes an upstream while a worker writes health: the foreign key refuses that row at commit
    (found by the browser test, whose upstream was removed as the worker flushed); the others are written."""
    gone = upstream_create(name="gone", target=target_from(url="https://gone.example/mcp", command=None))
    kept = upstream_create(name="kept", target=target_from(url="https://kept.example/mcp", command=None))
    seen = timezone.now()
    reports = [(gone.pk, Health(last_success_at=seen, latency_ms=1.0)), (kept.pk, Health(last_success_at=seen))]

    def removed_meanwhile(sender: Any, instance: UpstreamStatus, **kwargs: Any) -> None:
        if instance.upstream_id == gone.pk:
            with connection.cursor() as cursor:  # as another process would: no cascade from this one
                cursor.execute(f"DELETE FROM {Upstream._meta.db_table} WHERE id = %s", [gone.pk])  # noqa: S608

    pre_save.connect(removed_meanwhile, sender=UpstreamStatus)
    try:
        store_health(reports)
    finally:
        pre_save.disconnect(removed_meanwhile, sender=UpstreamStatus)

    # The deletion here rolled back with the refused write (in another process it would have stood).
    assert list(UpstreamStatus.objects.values_list("upstream__name", flat=True)) == ["kept"]
