"""Text checks the authorization server shares: NUL characters, which no database column can hold."""

from __future__ import annotations

from collections.abc import Iterable

from django.http import QueryDict

NUL = "\x00"


def contains_nul(values: Iterable[str]) -> bool:
    """True if any value holds a NUL (PostgreSQL refuses it in text and jsonb, SQLite truncates at it)."""
    return any(NUL in value for value in values)


NUL_IN_REQUEST = "The request contains a NUL character."


def nul_in_parameters(*queries: QueryDict) -> bool:
    """Whether any name or value of these QueryDicts contains NUL.

    No OAuth parameter may (RFC 6749 Appendix A: client_id, code, token, state... are
    printable ASCII; URIs have no NUL either), and PostgreSQL cannot store or even compare
    a string with one: the query raises. So such a request is malformed, and is refused
    before any of it reaches the database.
    """
    for query in queries:
        for name, values in query.lists():
            if NUL in name or contains_nul(values):
                return True
    return False
