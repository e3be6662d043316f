"""The upstream management commands: add_upstream, list_upstreams, remove_upstream, rotate_upstream_keys.

Most cases run through ``call_command``; the ones that prove what an operator sees in a terminal
(one ``CommandError:`` line, no traceback, no secret) run ``manage.py`` as a real process on the
test database, so those tests are transactional.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import httpx2
import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from audit.models import AuditEvent, AuditKind
from gateway.connections import connection_token_save
from gateway.crypto import unseal
from gateway.models import AssertionKey, Connection, Transport, Upstream, UpstreamStatus
from gateway.services import target_from, upstream_create
from oauth_ext.models import User
from tests.e2e.server import REPO, database_env
from tests.gateway.fixtures import person_server_fixture, serving  # noqa: F401  (fixtures)
from tests.ports import free_port

SECRET = "sk-live-command-secret-0123456789"
UPSTREAMS = Path(__file__).resolve().parent / "upstreams"
COLLIDING = shlex.join([sys.executable, str(UPSTREAMS / "colliding_server.py")])
HARMLESS = shlex.join([sys.executable, str(UPSTREAMS / "colliding_server.py"), "--harmless"])
HTTP_URL = "https://mcp.example.net/mcp"
BROKEN_SEAL = "no key in MCPGATE_UPSTREAM_KEYS opens this upstream's credentials; nothing was changed"


def new_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
def key(settings: Any) -> str:
    """The key upstream credentials are sealed with (MCPGATE_UPSTREAM_KEYS), in this process."""
    value = new_key()
    settings.MCPGATE_UPSTREAM_KEYS = [value]
    return value


def run(*args: str) -> str:
    """``manage.py ARGS`` in this process; its stdout."""
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    assert err.getvalue() == ""
    return out.getvalue()


def refused(*args: str) -> str:
    """The CommandError ``manage.py ARGS`` fails with, in this process."""
    with pytest.raises(CommandError) as error:
        run(*args)
    return str(error.value)


def manage(*args: str, keys: list[str]) -> subprocess.CompletedProcess[str]:
    """``manage.py ARGS`` as an operator runs it, on the test database, with MCPGATE_UPSTREAM_KEYS=``keys``."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MCPGATE_SQLITE_PATH")}
    env.update(database_env(connection.settings_dict))
    env["MCPGATE_UPSTREAM_KEYS"] = ",".join(keys)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The message of the single ``CommandError:`` line a failed command wrote (nothing else, no traceback)."""
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("CommandError: ")
    return lines[0].removeprefix("CommandError: ")


def added(name: str, prefix: str, transport: str) -> str:
    return json.dumps({"name": name, "prefix": prefix, "transport": transport}) + "\n"


# ---------------------------------------------------------------------------
# add_upstream: what it prints and stores
# ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_adding_a_url_prints_name_prefix_and_streamable_http(key: str) -> None:
    assert run("add_upstream", "github", "--url", HTTP_URL) == added("github", "github", "streamable_http")
    stored = Upstream.objects.get()
    assert (stored.url, stored.transport, stored.timeout_seconds) == (HTTP_URL, Transport.STREAMABLE_HTTP, 30.0)
    assert AuditEvent.objects.get().event == AuditKind.UPSTREAM_ADDED


@pytest.mark.django_db
def test_adding_a_url_with_sse_prints_the_legacy_transport(key: str) -> None:
    out = run("add_upstream", "legacy", "--url", "http://127.0.0.1:9000/sse", "--sse", "--prefix", "old")
    assert out == added("legacy", "old", "sse")


@pytest.mark.django_db
def test_adding_a_command_prints_stdio_and_stores_its_arguments(key: str) -> None:
    out = run(
        "add_upstream", "time", "--command", "uvx mcp-server-time --local-timezone 'Europe/Paris'", "--env", "TZ=UTC"
    )
    assert out == added("time", "time", "stdio")
    stored = Upstream.objects.get()
    assert stored.command == ["uvx", "mcp-server-time", "--local-timezone", "Europe/Paris"]
    assert (stored.env_names, unseal(stored.sealed_env)) == (["TZ"], {"TZ": "UTC"})


@pytest.mark.django_db
def test_every_option_is_stored(key: str, settings: Any) -> None:
    settings.MCPGATE_SCOPES = {**settings.MCPGATE_SCOPES, "db:read": "Read the databases"}
    run(
        "add_upstream",
        "github",
        "--url",
        HTTP_URL,
        "--prefix",
        "gh",
        "--groups",
        "eng",
        "ops",
        "--scopes",
        "db:read",
        "--header",
        f"Authorization: Bearer {SECRET}",
        "--header",
        "X-Team: core",
        "--timeout",
        "12.5",
    )
    stored = Upstream.objects.get()
    assert (stored.prefix, stored.groups, stored.scopes, stored.timeout_seconds) == (
        "gh",
        ["eng", "ops"],
        ["db:read"],
        12.5,
    )
    assert stored.header_names == ["Authorization", "X-Team"]
    assert unseal(stored.sealed_headers) == {"Authorization": f"Bearer {SECRET}", "X-Team": "core"}


@pytest.mark.django_db
def test_a_header_secret_never_appears_in_the_output(key: str) -> None:
    out, err = StringIO(), StringIO()
    call_command(
        "add_upstream", "github", "--url", HTTP_URL, "--header", f"Authorization: {SECRET}", stdout=out, stderr=err
    )
    assert SECRET not in out.getvalue() + err.getvalue()
    assert SECRET not in json.dumps([e.detail for e in AuditEvent.objects.all()])


# ---------------------------------------------------------------------------
# add_upstream: refusals, one line each, nothing stored
# ---------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--url", "ftp://mcp.example.net/mcp"],
            "--url must be an http:// or https:// URL, not 'ftp://mcp.example.net/mcp'",
        ),
        (
            ["--url", "https://u:pw@mcp.example.net/mcp"],
            "--url must not carry a user or password; use --header for credentials",
        ),
        (["--url", "https://mcp.example.net/mcp#x"], "--url must not have a #fragment"),
        (["--command", "uvx server", "--sse"], "--sse applies to --url upstreams only"),
        (["--command", "  "], "--command must name a program"),
        (
            ["--url", HTTP_URL, "--prefix", "Bad"],
            "prefix 'Bad' must be 1-31 lower-case letters, digits and dashes (e.g. github)",
        ),
        (["--url", HTTP_URL, "--prefix", "notes"], None),
        (["--url", HTTP_URL, "--header", "Bad Name: x"], "--header must be 'Name: value', not 'Bad …'"),
        (
            ["--url", HTTP_URL, "--header", "Mcp-Session-Id: abc"],
            "--header Mcp-Session-Id: set by mcpgate itself for every request; it cannot be configured",
        ),
        (
            ["--command", "uvx server", "--header", "X-Key: v"],
            "--header applies to --url upstreams; give a stdio upstream --env instead",
        ),
        (
            ["--url", HTTP_URL, "--env", "KEY=v"],
            "--env applies to --command upstreams; give an HTTP upstream --header instead",
        ),
        (
            ["--command", "uvx server", "--env", "1KEY=v"],
            "--env must be NAME=VALUE with NAME of letters, digits and _, not '1KEY= …'",
        ),
        (["--url", HTTP_URL, "--timeout", "0"], "--timeout must be more than 0 and at most 600 seconds, not 0"),
        (["--url", HTTP_URL, "--timeout", "601"], "--timeout must be more than 0 and at most 600 seconds, not 601"),
        (["--url", HTTP_URL, "--groups", "a,b"], "group 'a,b' is not an oauth2-proxy group name"),
        (
            ["--command", "uvx server", "--identity-assertion", "X-Identity"],
            "--identity-assertion X-Identity: applies to Streamable HTTP upstreams (--url without --sse)",
        ),
        (
            ["--url", HTTP_URL, "--sse", "--identity-assertion", "X-Identity"],
            "--identity-assertion X-Identity: applies to Streamable HTTP upstreams (--url without --sse)",
        ),
        (
            ["--url", HTTP_URL, "--identity-assertion", "Authorization"],
            "--identity-assertion Authorization: mcpgate or HTTP gives that header its own meaning; name one of "
            "your own, e.g. X-Mcpgate-Identity",
        ),
        (
            ["--url", HTTP_URL, "--identity-assertion", "Mcp-Session-Id"],
            "--identity-assertion Mcp-Session-Id: mcpgate or HTTP gives that header its own meaning; name one of "
            "your own, e.g. X-Mcpgate-Identity",
        ),
        (
            ["--url", HTTP_URL, "--identity-assertion", "X Identity"],
            "--identity-assertion X Identity: not a header name (RFC 9110 token characters)",
        ),
        (
            ["--url", HTTP_URL, "--header", "X-Identity: fixed", "--identity-assertion", "x-identity"],
            "--identity-assertion x-identity: already configured with --header",
        ),
    ],
    ids=[
        "url-scheme",
        "url-credentials",
        "url-fragment",
        "sse-with-command",
        "empty-command",
        "prefix-pattern",
        "prefix-clashes-with-local-tool",
        "header-format",
        "reserved-header",
        "header-for-stdio",
        "env-for-http",
        "env-format",
        "timeout-zero",
        "timeout-too-long",
        "group",
        "assertion-for-stdio",
        "assertion-for-sse",
        "assertion-as-authorization",
        "assertion-reserved-header",
        "assertion-header-format",
        "assertion-header-configured-already",
    ],
)
def test_bad_input_is_refused_with_one_line_and_nothing_stored(
    key: str, args: list[str], message: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if message is None:
        # A local tool named like notes__x (a tool module may register one): the prefix would shadow it.
        monkeypatch.setattr("gateway.management.commands.add_upstream.reserved_names", lambda: frozenset({"notes__x"}))
        message = "prefix 'notes' would clash with the local tool 'notes__x'"
    assert refused("add_upstream", "gh-up", *args) == message
    assert not Upstream.objects.exists() and not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_a_bad_name_is_refused(key: str) -> None:
    message = refused("add_upstream", "GitHub", "--url", HTTP_URL)
    assert message == "name 'GitHub' must be 1-31 lower-case letters, digits and dashes (e.g. github)"


@pytest.mark.django_db
def test_an_unknown_scope_is_refused(key: str) -> None:
    message = refused("add_upstream", "github", "--url", HTTP_URL, "--scopes", "db:write")
    assert message.startswith(
        "unknown scope 'db:write': declare it first in MCPGATE_EXTRA_SCOPES "
        "(e.g. MCPGATE_EXTRA_SCOPES='db:write=What it lets a client do'); known: "
    )
    assert not Upstream.objects.exists()


@pytest.mark.django_db
def test_a_prefix_taken_is_refused(key: str) -> None:
    run("add_upstream", "github", "--url", HTTP_URL, "--prefix", "gh")
    assert refused("add_upstream", "gitlab", "--url", HTTP_URL, "--prefix", "gh") == (
        "prefix 'gh' is taken by the upstream 'github'"
    )
    assert list(Upstream.objects.values_list("name", flat=True)) == ["github"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", HTTP_URL, "--command", "uvx server"], "Error: argument --command: not allowed with argument --url"),
        ([], "Error: one of the arguments --url --command is required"),
    ],
    ids=["both", "neither"],
)
def test_exactly_one_of_url_and_command_is_required(key: str, args: list[str], message: str) -> None:
    assert refused("add_upstream", "github", *args) == message


@pytest.mark.django_db
def test_credentials_without_a_key_are_refused(settings: Any) -> None:
    settings.MCPGATE_UPSTREAM_KEYS = []
    message = refused("add_upstream", "github", "--url", HTTP_URL, "--header", f"Authorization: {SECRET}")
    assert message.startswith("MCPGATE_UPSTREAM_KEYS is not set: upstream credentials are encrypted with it.")
    assert SECRET not in message
    assert not Upstream.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_refused_header_is_one_line_without_a_traceback_or_the_secret(key: str) -> None:
    result = manage("add_upstream", "github", "--url", HTTP_URL, "--header", f"Host: {SECRET}", keys=[key])
    assert one_error_line(result) == ("--header Host: set by mcpgate itself for every request; it cannot be configured")
    assert SECRET not in result.stdout + result.stderr
    assert not Upstream.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_name_taken_is_one_line_without_a_traceback(key: str) -> None:
    upstream_create(name="github", target=target_from(url=HTTP_URL, command=None))
    result = manage("add_upstream", "github", "--url", "https://other.example.net/mcp", keys=[key])
    assert one_error_line(result) == "name 'github' is taken: remove_upstream github first, or choose another"
    assert Upstream.objects.get().url == HTTP_URL


# ---------------------------------------------------------------------------
# add_upstream --prefix "": names checked against what is taken, by connecting once
# ---------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_an_empty_prefix_for_an_unreachable_upstream_is_refused_with_one_line(key: str) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    result = manage("add_upstream", "nowhere", "--url", url, "--prefix", "", keys=[key])
    message = one_error_line(result)
    assert message.startswith('--prefix "": cannot list the upstream\'s names to check them (')
    assert "ConnectError" in message
    assert not Upstream.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_an_empty_prefix_whose_names_collide_with_a_local_tool_is_refused(key: str) -> None:
    result = manage("add_upstream", "colliding", "--command", COLLIDING, "--prefix", "", keys=[key])
    assert one_error_line(result) == '--prefix "": these names are taken already: whoami'
    assert not Upstream.objects.exists() and not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_an_empty_prefix_whose_names_another_upstream_exposes_is_refused(key: str) -> None:
    other = upstream_create(name="other", target=target_from(url=HTTP_URL, command=None), prefix="")
    UpstreamStatus.objects.create(
        upstream=other,
        catalog={"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]},
        catalog_at=timezone.now(),
    )
    message = refused("add_upstream", "colliding", "--command", COLLIDING, "--prefix", "")
    assert message == '--prefix "": these names are taken already: echo, whoami'
    assert list(Upstream.objects.values_list("name", flat=True)) == ["other"]


@pytest.mark.django_db
def test_an_empty_prefix_whose_names_are_free_is_added(key: str) -> None:
    assert run("add_upstream", "harmless", "--command", HARMLESS, "--prefix", "") == added("harmless", "", "stdio")
    assert Upstream.objects.get().prefix == ""


# ---------------------------------------------------------------------------
# list_upstreams
# ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_list_is_one_json_line_per_upstream_with_health_and_no_credentials(key: str) -> None:
    github = upstream_create(
        name="github", target=target_from(url=HTTP_URL, command=None), headers={"Authorization": SECRET}, groups=["eng"]
    )
    upstream_create(name="time", target=target_from(url=None, command="uvx mcp-server-time"), env={"API_KEY": SECRET})
    succeeded = timezone.now()
    failed = succeeded + timedelta(seconds=5)
    UpstreamStatus.objects.create(
        upstream=github,
        last_success_at=succeeded,
        last_error="connection failed: ConnectError: refused",
        last_error_at=failed,
        latency_ms=12.5,
        catalog={"tools": [{"name": "a", "inputSchema": {}}, {"name": "b", "inputSchema": {}}]},
    )
    out = run("list_upstreams")
    assert SECRET not in out
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines == [
        {
            "name": "github",
            "prefix": "github",
            "transport": "streamable_http",
            "target": HTTP_URL,
            "groups": ["eng"],
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
            "enabled": True,
            "timeout_seconds": 30.0,
            "health": {
                "failing": True,
                "last_success_at": succeeded.isoformat(),
                "last_error": "connection failed: ConnectError: refused",
                "last_error_at": failed.isoformat(),
                "latency_ms": 12.5,
                "tools": 2,
            },
        },
        {
            "name": "time",
            "prefix": "time",
            "transport": "stdio",
            "target": "uvx mcp-server-time",
            "groups": [],
            "scopes": [],
            "header_names": [],
            "env_names": ["API_KEY"],
            "identity_assertion_header": "",
            "credential": "shared",
            "token_pattern": "",
            "oauth_client_id": "",
            "oauth_client_secret": False,
            "authorization_url": "",
            "token_url": "",
            "upstream_scopes": [],
            "enabled": True,
            "timeout_seconds": 30.0,
            "health": None,
        },
    ]


@pytest.mark.django_db
def test_no_upstreams_list_as_nothing() -> None:
    assert run("list_upstreams") == ""


# ---------------------------------------------------------------------------
# remove_upstream
# ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_removing_prints_the_name_and_audits_it(key: str) -> None:
    run("add_upstream", "github", "--url", HTTP_URL)
    assert run("remove_upstream", "github") == json.dumps({"removed": "github"}) + "\n"
    assert not Upstream.objects.exists()
    assert list(AuditEvent.objects.order_by("pk").values_list("event", flat=True)) == [
        AuditKind.UPSTREAM_ADDED,
        AuditKind.UPSTREAM_REMOVED,
    ]


@pytest.mark.django_db(transaction=True)
def test_removing_an_unknown_upstream_fails_with_one_line(key: str) -> None:
    assert one_error_line(manage("remove_upstream", "ghost", keys=[key])) == "no upstream is named 'ghost'"


# ---------------------------------------------------------------------------
# rotate_upstream_keys
# ---------------------------------------------------------------------------
def create_with_credentials() -> tuple[Upstream, Upstream, Upstream]:
    http = upstream_create(
        name="github", target=target_from(url=HTTP_URL, command=None), headers={"Authorization": SECRET}
    )
    stdio = upstream_create(name="time", target=target_from(url=None, command="uvx server"), env={"API_KEY": SECRET})
    bare = upstream_create(name="bare", target=target_from(url=HTTP_URL, command=None))
    return http, stdio, bare


@pytest.mark.django_db
def test_rotation_reseals_every_credential_so_the_old_key_can_go(settings: Any) -> None:
    old, new = new_key(), new_key()
    settings.MCPGATE_UPSTREAM_KEYS = [old]
    create_with_credentials()
    settings.MCPGATE_UPSTREAM_KEYS = [new, old]
    assert run("rotate_upstream_keys") == json.dumps({"resealed": 3}) + "\n"
    settings.MCPGATE_UPSTREAM_KEYS = [new]
    stored = {u.name: u for u in Upstream.objects.all()}
    assert unseal(stored["github"].sealed_headers) == {"Authorization": SECRET}
    assert unseal(stored["time"].sealed_env) == {"API_KEY": SECRET}
    assert (stored["bare"].sealed_headers, stored["bare"].sealed_env) == ("", "")


@pytest.mark.django_db
def test_rotation_changes_nothing_when_a_value_cannot_be_opened(settings: Any) -> None:
    old, lost, new = new_key(), new_key(), new_key()
    settings.MCPGATE_UPSTREAM_KEYS = [old]
    upstream_create(name="github", target=target_from(url=HTTP_URL, command=None), headers={"Authorization": SECRET})
    settings.MCPGATE_UPSTREAM_KEYS = [lost]
    upstream_create(name="time", target=target_from(url=None, command="uvx server"), env={"API_KEY": SECRET})
    before = list(Upstream.objects.order_by("pk").values_list("sealed_headers", "sealed_env"))
    settings.MCPGATE_UPSTREAM_KEYS = [new, old]
    assert refused("rotate_upstream_keys") == BROKEN_SEAL
    assert list(Upstream.objects.order_by("pk").values_list("sealed_headers", "sealed_env")) == before


@pytest.mark.django_db
def test_rotation_without_a_key_changes_nothing(settings: Any) -> None:
    settings.MCPGATE_UPSTREAM_KEYS = [new_key()]
    create_with_credentials()
    settings.MCPGATE_UPSTREAM_KEYS = []
    message = refused("rotate_upstream_keys")
    assert message.startswith("MCPGATE_UPSTREAM_KEYS is not set: upstream credentials are encrypted with it.")
    assert message.endswith("; nothing was changed")


@pytest.mark.django_db(transaction=True)
def test_a_failed_rotation_is_one_line_without_a_traceback(settings: Any) -> None:
    old = new_key()
    settings.MCPGATE_UPSTREAM_KEYS = [old]
    create_with_credentials()
    before = list(Upstream.objects.order_by("pk").values_list("sealed_headers", "sealed_env"))
    result = manage("rotate_upstream_keys", keys=[new_key()])
    assert one_error_line(result) == BROKEN_SEAL
    assert list(Upstream.objects.order_by("pk").values_list("sealed_headers", "sealed_env")) == before


# ---------------------------------------------------------------------------
# add_upstream --identity-assertion (gateway.assertions)
# ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_an_identity_assertion_header_is_stored_and_its_signing_key_made_and_published(key: str) -> None:
    out = run("add_upstream", "tickets", "--url", HTTP_URL, "--identity-assertion", "X-Mcpgate-Identity")

    assert json.loads(out) == {"name": "tickets", "prefix": "tickets", "transport": "streamable_http"}
    assert Upstream.objects.get().identity_assertion_header == "X-Mcpgate-Identity"
    (signing_key,) = AssertionKey.objects.all()
    assert signing_key.retired_at is None and "d" not in signing_key.public_jwk
    added = AuditEvent.objects.get(event=AuditKind.UPSTREAM_ADDED)
    assert added.detail["identity_assertion_header"] == "X-Mcpgate-Identity"


@pytest.mark.django_db
def test_an_identity_assertion_without_upstream_keys_is_refused_and_nothing_stored(settings: Any) -> None:
    settings.MCPGATE_UPSTREAM_KEYS = []

    message = refused("add_upstream", "tickets", "--url", HTTP_URL, "--identity-assertion", "X-Mcpgate-Identity")

    assert message.startswith("--identity-assertion: MCPGATE_UPSTREAM_KEYS is not set")
    assert not Upstream.objects.exists() and not AssertionKey.objects.exists()


@pytest.mark.django_db
def test_rotate_upstream_keys_reseals_the_assertion_signing_keys_too(key: str, settings: Any) -> None:
    run("add_upstream", "tickets", "--url", HTTP_URL, "--identity-assertion", "X-Mcpgate-Identity")
    new = Fernet.generate_key().decode()
    settings.MCPGATE_UPSTREAM_KEYS = [new, key]

    assert run("rotate_upstream_keys") == json.dumps({"resealed": 2}) + "\n"  # the upstream, the signing key

    settings.MCPGATE_UPSTREAM_KEYS = [new]
    assert unseal(AssertionKey.objects.get().sealed_private_key)["pem"].startswith("-----BEGIN PRIVATE KEY-----")


# ---------------------------------------------------------------------------
# add_upstream --per-person-token (gateway.connections)
# ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_per_person_token_upstream_is_stored_with_its_pattern_and_audited(key: str) -> None:
    out = run("add_upstream", "linear", "--url", HTTP_URL, "--per-person-token", "--token-pattern", r"lin_api_\w{40}")

    assert json.loads(out) == {"name": "linear", "prefix": "linear", "transport": "streamable_http"}
    upstream = Upstream.objects.get()
    assert (upstream.credential, upstream.token_pattern) == ("person_token", r"lin_api_\w{40}")
    added = AuditEvent.objects.get(event=AuditKind.UPSTREAM_ADDED)
    assert (added.detail["credential"], added.detail["token_pattern"]) == ("person_token", r"lin_api_\w{40}")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--command", "npx -y some-server", "--per-person-token"],
            "--per-person-token: applies to Streamable HTTP upstreams (--url without --sse)",
        ),
        (
            ["--url", HTTP_URL, "--sse", "--per-person-token"],
            "--per-person-token: applies to Streamable HTTP upstreams (--url without --sse)",
        ),
        (
            ["--url", HTTP_URL, "--per-person-token", "--header", "Authorization: Bearer shared"],
            "--per-person-token: each person's own token goes in Authorization; drop --header Authorization",
        ),
        (
            ["--url", HTTP_URL, "--token-pattern", "lin_api_.*"],
            "--token-pattern: applies with --per-person-token",
        ),
        (
            ["--url", HTTP_URL, "--per-person-token", "--token-pattern", "lin_api_[a-z"],
            "--token-pattern: not a regular expression (unterminated character set at position 8)",
        ),
        (
            ["--url", HTTP_URL, "--per-person-token", "--prefix", ""],
            '--prefix "": a per-person upstream cannot be listed before someone connects an account, so its '
            "names cannot be checked; give it a prefix",
        ),
    ],
    ids=["stdio", "sse", "shared-authorization", "pattern-alone", "bad-pattern", "unprefixed"],
)
def test_a_per_person_token_option_that_cannot_work_is_refused_and_nothing_stored(
    key: str, options: list[str], message: str
) -> None:
    assert refused("add_upstream", "linear", *options) == message
    assert not Upstream.objects.exists()


@pytest.mark.django_db
def test_a_per_person_token_upstream_without_upstream_keys_is_refused(settings: Any) -> None:
    settings.MCPGATE_UPSTREAM_KEYS = []
    message = refused("add_upstream", "linear", "--url", HTTP_URL, "--per-person-token")
    assert message.startswith("MCPGATE_UPSTREAM_KEYS is not set")
    assert not Upstream.objects.exists()


@pytest.mark.django_db
def test_rotate_upstream_keys_reseals_the_peoples_tokens_too(key: str, settings: Any) -> None:
    run("add_upstream", "linear", "--url", HTTP_URL, "--per-person-token")
    alice = User.objects.create(username="alice@example.com", email="alice@example.com")
    connection_token_save(user=alice, upstream=Upstream.objects.get(), token="lin_api_alice")
    new = Fernet.generate_key().decode()
    settings.MCPGATE_UPSTREAM_KEYS = [new, key]

    assert run("rotate_upstream_keys") == json.dumps({"resealed": 2}) + "\n"  # the upstream, Alice's token

    settings.MCPGATE_UPSTREAM_KEYS = [new]
    assert unseal(Connection.objects.get().sealed_credential) == {"access_token": "lin_api_alice"}


# ---------------------------------------------------------------------------
# add_upstream --per-person-oauth (gateway.upstream_oauth)
# ---------------------------------------------------------------------------
@pytest.fixture
def oauth_upstream_url() -> Iterator[str]:
    """oauth_server.py: an MCP server that is its own authorization server (RFC 9728 and RFC 8414 metadata)."""
    yield from serving("oauth_server.py", "3600", "http://127.0.0.1:8000/connect/tickets/callback")


@pytest.mark.django_db
def test_per_person_oauth_discovers_the_endpoints_and_stores_the_secret_sealed_never_printed(
    key: str, oauth_upstream_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TICKETS_SECRET", "tickets-secret")
    out = run(
        "add_upstream",
        "tickets",
        "--url",
        oauth_upstream_url,
        "--per-person-oauth",
        "--client-id",
        "mcpgate",
        "--client-secret-env",
        "TICKETS_SECRET",
        "--upstream-scopes",
        "tickets",
        "read",
    )

    base = oauth_upstream_url.removesuffix("/mcp")
    assert "tickets-secret" not in out
    upstream = Upstream.objects.get()
    assert (upstream.credential, upstream.oauth_client_id, upstream.upstream_scopes) == (
        "person_oauth",
        "mcpgate",
        ["tickets", "read"],
    )
    assert (upstream.authorization_url, upstream.token_url, upstream.oauth_issuer) == (
        f"{base}/authorize",
        f"{base}/token",
        base,
    )
    assert "tickets-secret" not in upstream.sealed_oauth_client_secret
    assert unseal(upstream.sealed_oauth_client_secret) == {"secret": "tickets-secret"}
    added = AuditEvent.objects.get(event=AuditKind.UPSTREAM_ADDED)
    assert added.detail["oauth_client_secret"] is True and "tickets-secret" not in json.dumps(added.detail)


@pytest.mark.django_db
def test_per_person_oauth_with_both_endpoints_given_needs_no_discovery_and_may_be_a_public_client(key: str) -> None:
    run(
        "add_upstream",
        "tickets",
        "--url",
        HTTP_URL,
        "--per-person-oauth",
        "--client-id",
        "mcpgate",
        "--authorization-url",
        "https://auth.example.net/authorize",
        "--token-url",
        "https://auth.example.net/token",
    )
    upstream = Upstream.objects.get()
    assert (upstream.authorization_url, upstream.token_url, upstream.sealed_oauth_client_secret) == (
        "https://auth.example.net/authorize",
        "https://auth.example.net/token",
        "",
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--per-person-oauth", "--client-id", "m", "--token-url", "https://a.example/token"],
            "--per-person-oauth: give both --authorization-url and --token-url, or neither (then they are discovered)",
        ),
        (
            ["--per-person-oauth", "--client-id", "m", "--client-secret-env", "NOT_SET_ANYWHERE"],
            "--client-secret-env NOT_SET_ANYWHERE: that environment variable is not set",
        ),
        (
            [
                "--per-person-oauth",
                "--client-id",
                "m",
                "--authorization-url",
                "ftp://a.example/authorize",
                "--token-url",
                "https://a.example/token",
            ],
            "--per-person-oauth: 'ftp://a.example/authorize' is not an http:// or https:// URL",
        ),
        (
            [
                "--per-person-oauth",
                "--client-id",
                "m",
                "--authorization-url",
                "https://a.example/authorize",
                "--token-url",
                "https://a.example/token",
                "--upstream-scopes",
                'bad"scope',
            ],
            "--per-person-oauth: 'bad\"scope' is not an OAuth scope (RFC 6749 §3.3)",
        ),
        (["--client-id", "m"], "--client-id: applies with --per-person-oauth"),
        (["--per-person-oauth", "--per-person-token"], None),
    ],
    ids=["one-endpoint", "unset-variable", "not-http", "bad-scope", "without-oauth", "both-modes"],
)
def test_a_per_person_oauth_option_that_cannot_work_is_refused_and_nothing_stored(
    key: str, options: list[str], message: str | None
) -> None:
    if message is None:
        with pytest.raises(CommandError, match="not allowed with argument"):
            call_command("add_upstream", "tickets", "--url", HTTP_URL, *options, stdout=StringIO())
    else:
        assert refused("add_upstream", "tickets", "--url", HTTP_URL, *options) == message
    assert not Upstream.objects.exists()


@pytest.mark.django_db
def test_per_person_oauth_whose_server_cannot_be_discovered_is_refused(key: str, person_server: str) -> None:
    """person_server.py publishes RFC 9728 metadata naming itself, but serves no RFC 8414 metadata."""
    message = refused("add_upstream", "tickets", "--url", person_server, "--per-person-oauth", "--client-id", "m")
    assert message == (
        f"--per-person-oauth: cannot discover the authorization server of {person_server} (no OAuth metadata "
        f"found for {person_server} (RFC 9728, RFC 8414)); give --authorization-url and --token-url"
    )
    assert not Upstream.objects.exists()


@pytest.mark.django_db
def test_per_person_oauth_without_a_client_id_where_nothing_can_be_discovered_is_refused(key: str) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens there
    message = refused("add_upstream", "tickets", "--url", url, "--per-person-oauth")
    origin = url.removesuffix("/mcp")
    assert message == (
        f"--per-person-oauth: cannot discover the authorization server of {url} ({origin} did not answer "
        "(ConnectError)); give --authorization-url and --token-url, and --client-id (mcpgate registers itself "
        "only where it can discover)"
    )
    assert not Upstream.objects.exists()


@pytest.mark.django_db
def test_per_person_oauth_without_a_client_id_registers_mcpgate_with_the_callback_of_every_host(
    key: str, oauth_upstream_url: str
) -> None:
    out = run(
        "add_upstream", "tickets", "--url", oauth_upstream_url, "--per-person-oauth", "--upstream-scopes", "tickets"
    )

    upstream = Upstream.objects.get()
    registered = httpx2.get(oauth_upstream_url.removesuffix("/mcp") + "/clients").json()[upstream.oauth_client_id]
    assert upstream.oauth_client_id != "mcpgate" and upstream.oauth_client_id not in ("", None)
    secret = unseal(upstream.sealed_oauth_client_secret)["secret"]
    assert secret and secret not in out
    assert sorted(registered["redirect_uris"]) == [
        "http://127.0.0.1:8000/connect/tickets/callback",
        "https://mcp.example.com/connect/tickets/callback",
    ]
    assert (registered["token_endpoint_auth_method"], registered["scope"]) == ("client_secret_basic", "tickets")
