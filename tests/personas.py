"""The people every test speaks of, defined once (tests/testenv.py configures the domains and operators to match)."""

from __future__ import annotations

# Ordinary members of the organisation (example.com is in MCPGATE_EMAIL_DOMAINS).
ALICE = "alice@example.com"
BOB = "bob@example.com"
# Someone outside the allowed email domains.
MALLORY = "mallory@evil.test"
# Operators: Olivia by address (MCPGATE_OPERATOR_EMAILS), Oscar by group (MCPGATE_OPERATOR_GROUPS).
OLIVIA = "olivia@example.com"
OSCAR = "oscar@example.com"
OPERATOR_GROUP = "mcp-admins"
