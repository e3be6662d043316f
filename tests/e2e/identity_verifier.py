"""An internal upstream that authorizes per person by mcpgate's identity assertion, verified as a real one would.

Run as ``python -m tests.e2e.identity_verifier PORT JWKS_URL ISSUER CACHE_SECONDS``: the ``mcp`` SDK's
MCPServer on ``http://127.0.0.1:PORT/mcp`` whose tool ``me`` reads the ``X-Mcpgate-Identity`` header of
its request, verifies it with PyJWT's ``PyJWKClient`` against mcpgate's ``/.well-known/jwks.json``
(fetched over HTTP and cached CACHE_SECONDS; an unknown key id is fetched again at most every 30 s,
PyJWT's default), checking ``aud`` (its own URL), ``iss`` and ``exp``, and answers with the verified
claims and the key id. Anything else is refused (a tool error).
"""

from __future__ import annotations

import json
import sys

import jwt
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

HEADER = "x-mcpgate-identity"


def app(port: int, jwks_url: str, issuer: str, cache_seconds: float) -> object:
    server = MCPServer("identity-verifier")
    keys = jwt.PyJWKClient(jwks_url, cache_jwk_set=True, lifespan=cache_seconds)
    audience = f"http://127.0.0.1:{port}/mcp"

    @server.tool()
    def me(ctx: Context) -> str:
        """Who mcpgate says this call is for, once the assertion is verified."""
        token = {k.lower(): v for k, v in (ctx.headers or {}).items()}.get(HEADER)
        if not token:
            raise ToolError("refused: no identity assertion")
        try:
            key = keys.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["ES256"],
                audience=audience,
                issuer=issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise ToolError(f"refused: {type(exc).__name__}: {exc}") from None
        return json.dumps({"kid": key.key_id, **claims})

    return server.streamable_http_app(stateless_http=True, json_response=True)


if __name__ == "__main__":
    port, jwks_url, issuer, cache_seconds = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
    uvicorn.run(app(port, jwks_url, issuer, cache_seconds), host="127.0.0.1", port=port, log_level="warning")
