"""``python -m tests.proxy.browser_cli URL``: the ``BROWSER`` of a client that opens the authorization URL itself.

Does what the person would: opens URL, is sent by oauth2-proxy to the (mock) provider, signs in as
the person named in ``PROXY_BROWSER_HEADERS`` (a JSON object of headers the mock reads), comes back,
consents, and lands on the client's loopback redirect URI, which completes the client's flow. One
JSON line is appended to ``PROXY_BROWSER_RECORD``: the redirect's parameters and the callback's
status, or the error.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx2

from .browser import approve


def visit(url: str, headers: dict[str, str]) -> dict[str, object]:
    redirect_uri = dict(parse_qsl(urlsplit(url).query))["redirect_uri"]
    with httpx2.Client(headers=headers, trust_env=False, timeout=20.0) as browser:
        params = approve(browser, url, redirect_uri)
        callback = browser.get(redirect_uri + "?" + urlencode(params))
    return {"url": url, "redirect": params, "callback_status": callback.status_code}


def main(argv: list[str]) -> int:
    record_path = Path(os.environ["PROXY_BROWSER_RECORD"])
    url = argv[0] if argv else ""
    try:
        record = visit(url, json.loads(os.environ.get("PROXY_BROWSER_HEADERS", "{}")))
    except Exception:
        record = {"url": url, "error": traceback.format_exc()}
    with record_path.open("a") as out:
        out.write(json.dumps(record) + "\n")
    return 0 if "error" not in record else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
