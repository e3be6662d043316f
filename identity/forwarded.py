"""Who the trusted proxy says signed in: its headers, or the ID token it forwarded."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from django.conf import settings

from .id_token import id_token_verifier
from .proxy import ProxyIdentity, SignInRefused, email_address, meta_key

logger = logging.getLogger(__name__)


def identity_from_meta(meta: Mapping[str, object]) -> ProxyIdentity | None:
    """Who the (trusted) proxy says signed in, per MCPGATE_IDENTITY_MODE; None for nobody.

    ``headers``: X-Forwarded-Email/-User/-Groups as sent. ``id_token``: the ID token header must
    be present and verify; the person is its ``email`` and ``sub``. An email header without an ID
    token is ignored (logged): oauth2-proxy sends both on every signed-in request, so that is a
    forgery or a misconfiguration. An email header naming someone else than the token refuses.
    Groups still come from the groups header: Google's ID tokens carry none.
    """
    headed = ProxyIdentity.from_meta(meta)
    if settings.MCPGATE_IDENTITY_MODE != "id_token":
        return headed
    token = str(meta.get(meta_key(settings.MCPGATE_ID_TOKEN_HEADER), "")).strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    if not token:
        if headed is not None:
            logger.warning(
                "ignored %s without an ID token (MCPGATE_IDENTITY_MODE=id_token)", settings.MCPGATE_EMAIL_HEADER
            )
        return None
    claims = id_token_verifier().verify(token)
    claimed = claims["email"]
    # OIDC Core §5.1: ``email`` is a string, RFC 5322 addr-spec syntax; held to one plain address.
    email = email_address(claimed if isinstance(claimed, str) else repr(claimed))
    if headed is not None and headed.email != email:
        raise SignInRefused("The forwarded email address does not match the identity token.")
    return ProxyIdentity(email=email, subject=str(claims["sub"]), groups=headed.groups if headed else ())
