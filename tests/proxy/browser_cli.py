"""``python -m tests.proxy.browser_cli URL``: the ``BROWSER`` of a client that opens the authorization URL itself.

Does what the person would: opens URL, is sent by oauth2-proxy to the (mock) provider, signs in as
the person named in ``PROXY_BROWSER_HEADERS`` (a JSON object of headers the mock reads), comes back,
consents, and lands on the client's loopback redirect URI, which completes the client's flow. One
JSON line is appended to ``PROXY_BROWSER_RECORD``: the redirect's parameters and the callback's
status, or the error.
"""

from __future__ import annotations

import sys

from tests.e2e import browser

from .browser import approve


def visit(url: str, headers: dict[str, str]) -> dict[str, object]:
    return browser.visit(url, headers, approve=approve, callback_from_browser=True)


def main(argv: list[str]) -> int:
    return browser.main(argv, env_prefix="PROXY_BROWSER", visit=visit)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
