"""RFC 9700 §4.2, §4.3 and §4.12: what the browser leg of the authorization flow must not leak.

Other attack classes have their own files here; those already proven elsewhere are listed, with their
tests, in docs/security.md.
"""

from __future__ import annotations

import pytest
from oauth2_provider.models import get_grant_model

from oauth_ext.models import Client
from tests.conftest import PKCE, Flow, authorize_params

pytestmark = pytest.mark.django_db


def test_consent_approval_redirects_with_302_never_307(flow: Flow, public_client: Client) -> None:
    """RFC 9700 §4.12: a 307 would make the browser re-POST the consent form (with its CSRF token) to the client."""
    page = flow.authorize(authorize_params(public_client.client_id, PKCE.make()))
    assert page.status_code == 200

    approved = flow.consent(page)

    assert approved.status_code == 302
    assert approved["Location"].startswith("http://127.0.0.1:33418/callback?")


def test_consent_refusal_redirects_with_302_never_307(flow: Flow, public_client: Client) -> None:
    page = flow.authorize(authorize_params(public_client.client_id, PKCE.make()))

    refused = flow.consent(page, allow=False)

    assert refused.status_code == 302
    assert "error=access_denied" in refused["Location"]
    assert get_grant_model().objects.count() == 0


def test_consent_page_tells_the_browser_not_to_send_its_url_elsewhere(flow: Flow, public_client: Client) -> None:
    """RFC 9700 §4.2.4: the page's URL (state, PKCE challenge) must not leave in a Referer to another origin.

    The page loads nothing from another origin (its CSP allows only 'self'), and the referrer
    policy keeps even a followed link from carrying the URL out.
    """
    page = flow.authorize(authorize_params(public_client.client_id, PKCE.make()))

    assert page.status_code == 200
    assert page["Referrer-Policy"] in ("same-origin", "no-referrer", "strict-origin")
    assert "default-src 'none'" in page["Content-Security-Policy"]


def test_the_redirect_carrying_the_code_is_never_cached(flow: Flow, public_client: Client) -> None:
    """RFC 9700 §4.3: a code in a cached response could be replayed from the browser's history or a proxy."""
    page = flow.authorize(authorize_params(public_client.client_id, PKCE.make()))

    approved = flow.consent(page)

    assert "code=" in approved["Location"]
    assert "no-store" in approved["Cache-Control"] or "no-cache" in approved["Cache-Control"]
