"""A fast, salted hash for generated OAuth client secrets (DOT's CLIENT_SECRET_HASHER)."""

from __future__ import annotations

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class ClientSecretHasher(PBKDF2PasswordHasher):
    """PBKDF2-HMAC-SHA256 with one iteration, i.e. a salted HMAC-SHA256: for client secrets only.

    Key stretching (Django's default, PBKDF2 at 1,000,000 iterations) makes it expensive to
    guess a *chosen* password from its stored hash. A client secret is not chosen: DOT
    generates it (``generate_client_secret``: 128 characters from a 62-character alphabet,
    about 760 bits), far beyond RFC 6749 §10.10's bound for generated credentials (a guess
    succeeding with probability at most 2^-128), so no number of iterations makes a stolen
    hash easier or harder to reverse. What the iterations did cost was the *verifier*: every
    request to /oauth/token or /oauth/revoke naming a confidential client with a wrong secret
    made the server run them, about half a second of CPU, for anyone on the internet (issue 8,
    finding 1). One HMAC takes microseconds.

    Subclassing Django's PBKDF2 hasher keeps its salt, encoding, constant-time comparison and
    ``must_update``; the ``algorithm`` name is ours, so a stored value says which hasher made
    it, and secrets stored by the old default verify through it and are moved here on their
    next successful use (``MCPGateValidator._check_secret``). People's passwords are not
    affected: they use the first of PASSWORD_HASHERS, which stays Django's default.
    """

    algorithm = "client_secret_pbkdf2_sha256"
    iterations = 1
