"""Transport security follows the host a request came to, not the least secure host configured.

The test environment is the ``.env.example`` pairing: an https public host
(https://mcp.example.com, behind the TLS-terminating proxy) next to an http loopback host
(http://127.0.0.1:8000). Deciding once from every configured URL turned the Secure flag and
HSTS off for both; now the public host's session and CSRF cookies are Secure (RFC 6265
§4.1.2.5) and its responses carry HSTS (RFC 6797), while the loopback host, where a Secure
cookie could not come back and HSTS must not be sent (RFC 6797 §7.2), gets neither.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import Client as HttpClient

from oauth_ext.models import Client
from tests.conftest import INTERNAL, PKCE, PUBLIC, Flow, authorize_params

pytestmark = pytest.mark.django_db

HSTS = "max-age=31536000"
SESSION = "mcpgate_session"
CSRF = "mcpgate_csrftoken"


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    """Rate limits and audit allowances are counted in the cache: no test may see another's."""
    cache.clear()
    yield
    cache.clear()


def consent_page(http: HttpClient, host: str, client: Client) -> Any:
    """Alice's first visit through oauth2-proxy: it signs her in (session) and shows a form (CSRF)."""
    response = Flow(http, host).authorize(authorize_params(client.client_id, PKCE.make()))
    assert response.status_code == 200, response.content
    assert {SESSION, CSRF} <= set(response.cookies), response.cookies
    return response


def test_the_public_https_hosts_session_and_csrf_cookies_are_secure(http: HttpClient, public_client: Client) -> None:
    response = consent_page(http, PUBLIC, public_client)

    assert response.cookies[SESSION]["secure"] is True
    assert response.cookies[CSRF]["secure"] is True
    assert response.cookies[SESSION]["httponly"] is True


def test_the_http_loopback_hosts_cookies_are_not_secure(http: HttpClient, public_client: Client) -> None:
    """A Secure cookie set over http would never be sent back there: the loopback host keeps working."""
    response = consent_page(http, INTERNAL, public_client)

    assert not response.cookies[SESSION]["secure"]
    assert not response.cookies[CSRF]["secure"]
    assert response.cookies[SESSION]["httponly"] is True


def test_one_configuration_serves_both_hosts(public_client: Client) -> None:
    """Both at once, in one process: nothing about the first host leaks into the second."""
    public = consent_page(HttpClient(), PUBLIC, public_client)
    internal = consent_page(HttpClient(), INTERNAL, public_client)
    public_again = consent_page(HttpClient(), PUBLIC, public_client)

    assert [r.cookies[SESSION]["secure"] for r in (public, internal, public_again)] == [True, "", True]


@pytest.mark.parametrize("path", ["/.well-known/oauth-authorization-server", "/healthz", "/oauth/authorize"])
def test_the_public_https_host_sends_hsts(http: HttpClient, path: str) -> None:
    response = http.get(path, HTTP_HOST=PUBLIC)

    assert response["Strict-Transport-Security"] == HSTS


@pytest.mark.parametrize("path", ["/.well-known/oauth-authorization-server", "/healthz", "/oauth/authorize"])
def test_the_http_loopback_host_sends_no_hsts(http: HttpClient, path: str) -> None:
    response = http.get(path, HTTP_HOST=INTERNAL)

    assert not response.has_header("Strict-Transport-Security")


def test_the_settings_flag_cookies_secure_whatever_hosts_are_configured() -> None:
    """The flags are static (the loopback host takes them off per response), so a deployment
    check sees what the public host sends."""
    assert settings.MCPGATE_INTERNAL_URL.startswith("http://")
    assert (settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE, settings.SECURE_HSTS_SECONDS) == (
        True,
        True,
        31536000,
    )


def test_check_deploy_is_clean_for_an_https_public_host_next_to_an_http_loopback_one() -> None:
    """``manage.py check --deploy`` with the .env.example pairing: no cookie or HSTS warning."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "MCPGATE_SQLITE_PATH": "/nonexistent/db",
        "SECRET_KEY": "x" * 20 + "-pairing-check-" + "y" * 30,
        "MCPGATE_PUBLIC_URL": "https://mcp.example.com",
        "MCPGATE_INTERNAL_URL": "http://127.0.0.1:8000",
        "MCPGATE_ENV_FILE": os.devnull,
        "MCPGATE_TRUSTED_PROXIES": "127.0.0.1/32",
        "MCPGATE_EMAIL_DOMAINS": "example.com",
    }

    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,  # exactly this environment, nothing inherited from the test run
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("System check identified no issues"), result.stdout
