"""The authorization server's HTTP endpoints, one module per endpoint family, on DOT's views."""

from .authorize import CONSENT_CSP, AuthorizeView
from .metadata import ProtectedResourceMetadataView, ServerMetadataView
from .registration import RegisterView, RegistrationManagementView
from .token import RevokeEndpointView, TokenEndpointView

__all__ = [
    "CONSENT_CSP",
    "AuthorizeView",
    "ProtectedResourceMetadataView",
    "RegisterView",
    "RegistrationManagementView",
    "RevokeEndpointView",
    "ServerMetadataView",
    "TokenEndpointView",
]
