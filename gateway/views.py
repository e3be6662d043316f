"""The gateway's one public page: the JWK Set upstreams verify identity assertions with."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_safe

from .assertions import published_key_set


@require_safe
@cache_control(public=True, max_age=300)
def jwks(request: HttpRequest) -> JsonResponse:
    """RFC 7517 §5 JWK Set of the identity assertion keys (gateway.assertions), public halves only.

    Cacheable for 5 minutes: a retired key stays in the set for an hour, and a verifier that meets an
    unknown ``kid`` (the key rotated since it fetched) fetches the set again.
    """
    return JsonResponse(published_key_set(), content_type="application/jwk-set+json")
