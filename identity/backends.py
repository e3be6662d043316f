"""The authentication backend for people the trusted proxy vouched for."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.http import HttpRequest

from oauth_ext.models import User

from .proxy import ProxyIdentity
from .services import user_sign_in_from_proxy


class ProxyIdentityBackend(ModelBackend):
    """``auth.authenticate(request, proxy_identity=...)``: the user oauth2-proxy signed in.

    Only ``identity.middleware.ProxyIdentityMiddleware`` builds a ``ProxyIdentity``, from headers that
    survived ``mcpgate.middleware.TrustedProxyMiddleware``; a password or any other credential is
    not this backend's business (it answers None and Django asks the next backend). Raises
    ``SignInRefused`` for an address outside MCPGATE_EMAIL_DOMAINS or a disabled account. Sessions
    are restored through ``ModelBackend.get_user``, which refuses inactive users.
    """

    def authenticate(  # type: ignore[override]
        self, request: HttpRequest | None, proxy_identity: ProxyIdentity | None = None, **kwargs: Any
    ) -> User | None:
        if proxy_identity is None or request is None:
            return None
        return user_sign_in_from_proxy(identity=proxy_identity, current=request.user, request=request)
