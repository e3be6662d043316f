"""The operators' console (Django admin): thin classes whose actions call the apps' services.

One module per group of models. No secret or token value is ever rendered: tokens are listed by a
fingerprint (the first characters of the SHA-256 checksum DOT stores for lookups, which cannot be
reversed), and a client secret appears once, on the page that answers its creation or rotation,
and is not stored anywhere it could be shown again.

Clients, tokens, codes and ID tokens are registered by DOT's own admin module, with the classes
named in OAUTH2_PROVIDER's ``*_ADMIN_CLASS`` settings (``clients.ClientAdmin`` and the
``credentials`` classes): DOT's public way to replace its admin, which would otherwise show masked
token values and register the models first.
"""

from . import audit, clients, credentials, people, policy, upstreams

__all__ = ["audit", "clients", "credentials", "people", "policy", "upstreams"]
