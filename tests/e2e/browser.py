"""A headless "browser" for MCP clients that open the authorization URL themselves (``BROWSER``).

``python -m tests.e2e.browser URL`` does what the person would: opens URL signed in at
oauth2-proxy (the identity headers in ``E2E_BROWSER_HEADERS``, a JSON object), consents,
and then lets the browser land on the client's loopback redirect URI, which completes the
client's flow. What happened is appended as one JSON line to ``E2E_BROWSER_RECORD``:
the URL, the redirect's parameters and the callback's status, or the error.

Clients start the browser and go on waiting for the redirect, so ``browser.sh`` runs this
in the background and returns at once.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx2

from .oauthclient import approve


def visit(
    url: str,
    headers: dict[str, str],
    *,
    approve: Callable[[httpx2.Client, str, str], dict[str, str]] = approve,
    callback_from_browser: bool = False,
) -> dict[str, object]:
    """Approve ``url`` in a browser sending ``headers``, then deliver the redirect to the client.

    ``callback_from_browser``: the same browser requests the loopback callback; otherwise a plain
    client does, without the browser's headers.
    """
    redirect_uri = dict(parse_qsl(urlsplit(url).query))["redirect_uri"]
    with httpx2.Client(headers=headers, trust_env=False, timeout=20.0) as browser:
        params = approve(browser, url, redirect_uri)
        if callback_from_browser:
            callback = browser.get(redirect_uri + "?" + urlencode(params))
    if not callback_from_browser:
        # The redirect itself goes to the client on loopback, without oauth2-proxy's headers.
        with httpx2.Client(trust_env=False, timeout=20.0) as plain:
            callback = plain.get(redirect_uri + "?" + urlencode(params))
    return {"url": url, "redirect": params, "callback_status": callback.status_code}


def main(
    argv: list[str],
    *,
    env_prefix: str = "E2E_BROWSER",
    visit: Callable[[str, dict[str, str]], dict[str, object]] = visit,
) -> int:
    """Visit ``argv[0]`` with the headers in ``{env_prefix}_HEADERS``; append the record to ``{env_prefix}_RECORD``."""
    record_path = Path(os.environ[f"{env_prefix}_RECORD"])
    url = argv[0] if argv else ""
    try:
        record = visit(url, json.loads(os.environ.get(f"{env_prefix}_HEADERS", "{}")))
    except Exception:
        record = {"url": url, "error": traceback.format_exc()}
    with record_path.open("a") as out:
        out.write(json.dumps(record) + "\n")
    return 0 if "error" not in record else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
