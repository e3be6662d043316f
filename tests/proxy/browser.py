"""A person's browser going through oauth2-proxy's sign-in (the mock provider) and mcpgate's consent."""

from __future__ import annotations

from urllib.parse import urljoin

import httpx2

from tests.e2e.oauthclient import redirect_params, submit_form

MAX_REDIRECTS = 10


def browse(browser: httpx2.Client, url: str, *, stop_at: str) -> httpx2.Response:
    """GET ``url`` and follow redirects (oauth2-proxy → provider → callback → back), stopping at a
    redirect to ``stop_at`` (the client's redirect URI: nothing listens there)."""
    response = browser.get(url)
    for _ in range(MAX_REDIRECTS):
        location = response.headers.get("location", "")
        if not response.is_redirect or location.startswith(stop_at):
            return response
        response = browser.get(urljoin(str(response.url), location))
    raise AssertionError(f"too many redirects from {url}")


def approve(
    browser: httpx2.Client, authorize_url: str, redirect_uri: str, *, consent_text: tuple[str, ...] = ()
) -> dict[str, str]:
    """Open the authorization URL, sign in at the provider if asked, consent if asked: the redirect's query."""
    page = browse(browser, authorize_url, stop_at=redirect_uri)
    if page.status_code == 200:
        for text in consent_text:
            assert text in page.text, (text, page.text)
        page = submit_form(browser, page, "allow")
    return redirect_params(page, redirect_uri)
