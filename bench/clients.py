"""The benchmark's OAuth clients and PKCE pair, shared by the seeding (bench/fixtures.py, in Django) and wrk's requests."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import quote

REDIRECT_URI = "http://127.0.0.1/cb"
CODE_VERIFIER = "bench-verifier-" + "v" * 40  # RFC 7636 §4.1: 43 to 128 characters
CODE_CHALLENGE = base64.urlsafe_b64encode(hashlib.sha256(CODE_VERIFIER.encode()).digest()).rstrip(b"=").decode()
CONFIDENTIAL_ID = "bench-confidential"
CONFIDENTIAL_SECRET = "bench-confidential-secret-0123456789"  # a throw-away benchmark database's
PUBLIC_ID = "bench-public"


def basic_auth() -> str:
    """RFC 6749 §2.3.1: client_secret_basic, both parts form-encoded first."""
    pair = f"{quote(CONFIDENTIAL_ID, safe='')}:{quote(CONFIDENTIAL_SECRET, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()
