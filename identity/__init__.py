"""Who the person is: the identity oauth2-proxy forwards, sign-in and operator rights."""
