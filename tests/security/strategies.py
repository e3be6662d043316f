"""Hypothesis strategies, response checks and per-example isolation shared by the fuzz tests (test_fuzz_*.py).

The strategies produce what a hostile or broken client can put on the wire: strings with NUL,
lone surrogates, bidi controls and megabytes of padding; JSON of every type and depth (far
deeper than Python's recursion limit), with duplicate keys, truncated, in UTF-16 or as invalid
UTF-8; form bodies with stray percent escapes, repeated parameters and odd charsets; malformed
``Authorization: Basic`` headers. The checks are the properties every answer must have.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, quote_plus, urlencode

from django.core.cache import caches
from django.db import transaction
from hypothesis import strategies as st

Pairs = list[tuple[str, str]]

# RFC 8252 §7.3: a loopback redirect URI may use any port.
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")

# ---------------------------------------------------------------------------
# Strings
# ---------------------------------------------------------------------------
# Strings that have broken a parser, a database, a template or a URL check somewhere.
NASTY_STRINGS = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfffy",
    "\ufeff",
    "\u202e",
    "\u2028",
    "\r\n",
    "\t",
    "\\",
    "/",
    "../",
    "..%2f",
    "%2e%2e/",
    "%00",
    "%",
    "%zz",
    "%f",
    "%ff%fe",
    "%C0%AF",
    "+",
    "&",
    "=",
    ";",
    "'",
    '"',
    "' OR '1'='1",
    "<script>alert(1)</script>",
    "{{7*7}}",
    "${jndi:ldap://x}",
    "null",
    "true",
    "0",
    "-1",
    "1e309",
    "NaN",
    "\U0001f600",
    "\u0130",
    "a" * 256,
    "a" * 4096,
)

# Every code point, surrogates and controls included.
any_character = st.characters(exclude_categories=())

nasty_text = st.sampled_from(NASTY_STRINGS)


class Repeated(str):
    """A long run of one character, shown as ``('a' * 300000)`` in hypothesis' reports."""

    def __repr__(self) -> str:
        return f"({self[:1]!r} * {len(self)})" if len(self) > 1 and len(set(self)) == 1 else str.__repr__(self)


class Wire(bytes):
    """A request body; hypothesis' reports show a long one by its length, head and tail."""

    def __repr__(self) -> str:
        if len(self) <= 1000:
            return bytes.__repr__(self)
        return f"Wire({len(self)} bytes: {bytes(self[:200])!r} ... {bytes(self[-60:])!r})"


def padding(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    """A long run of one character (cheap to generate at megabyte sizes, and it shrinks well)."""
    return st.builds(
        lambda n, c: Repeated(c * n), st.integers(min_size, max_size), st.sampled_from("a\x00\u00e9\U0001f600%")
    )


# The characters that break things most often, spliced into ordinary text.
spliced_text = st.builds(
    lambda head, special, tail: head + special + tail,
    st.text(max_size=8),
    st.sampled_from(["\x00", "\ud800", "\udfff", "\r\n", "\u202e", "%00", "%"]),
    st.text(max_size=8),
)

hostile_text = st.one_of(nasty_text, spliced_text, st.text(any_character, max_size=30), padding(256, 100_000))

# What an HTTP server hands Django as a header value: ISO-8859-1, no CR, LF or NUL (servers refuse those).
header_character = st.characters(min_codepoint=0x09, max_codepoint=0xFF, exclude_characters="\n\r\x0b\x0c\x7f")
header_text = st.one_of(
    st.text(header_character, max_size=60),
    nasty_text.filter(lambda s: all(c == "\t" or 0x20 <= ord(c) <= 0xFF for c in s)),
)

# ---------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN and Infinity included: Python's json writes and reads them, PostgreSQL's jsonb does not
    hostile_text,
)


def json_values(keys: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Any]:
    """JSON values of every type, nested a few levels."""
    key = (
        st.one_of(keys, st.text(any_character, max_size=10))
        if keys is not None
        else st.text(any_character, max_size=10)
    )
    return st.recursive(
        json_scalars,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(key, children, max_size=4),
        max_leaves=10,
    )


def dumps(value: Any, ascii_only: bool = True) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


def object_text(members: Sequence[tuple[str, str]]) -> str:
    """A JSON object written member by member (JSON text values), so keys may repeat."""
    return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in members) + "}"


@st.composite
def deeply_nested(draw: st.DrawFn) -> str:
    """JSON nested up to 200,000 levels: Python's json gives up at about 1,000 (RecursionError)."""
    depth = draw(st.integers(1, 200_000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a": ', "}")]))
    leaf = draw(st.sampled_from(["1", "null", '"x"', "[]", "{}"]))
    return opener * depth + leaf + closer * depth


# JSON texts no generated value produces: numbers Python refuses, truncation, not JSON at all.
odd_json_text = st.one_of(
    st.builds(lambda n: "9" * n, st.integers(4000, 6000)),  # over int_max_str_digits
    st.sampled_from(["1e999999", "-0", "NaN", "Infinity", "[1,]", "{,}", "{'a': 1}", '{"a" 1}', "", " ", "\ufeff{}"]),
)


@st.composite
def json_object_bodies(
    draw: st.DrawFn, plausible: st.SearchStrategy[dict[str, Any]], field_names: Sequence[str]
) -> str:
    """A JSON text for an endpoint that wants an object: mostly object-shaped, sometimes anything."""
    shape = draw(
        st.sampled_from(
            ["plausible", "any", "duplicate_keys", "nested_field", "nested", "truncated", "odd_field", "odd", "huge"]
        )
    )
    ascii_only = draw(st.booleans())
    if shape == "plausible":
        return dumps(draw(plausible), ascii_only)
    if shape == "any":
        return dumps(draw(json_values(st.sampled_from(field_names))), ascii_only)
    if shape == "nested":
        return draw(deeply_nested())
    if shape == "odd":
        return draw(odd_json_text)
    base = [(k, dumps(v, ascii_only)) for k, v in draw(plausible).items()]
    field = draw(st.sampled_from(field_names))
    if shape == "duplicate_keys":
        base += [(field, dumps(draw(json_values()), ascii_only)), (field, dumps(draw(json_values()), ascii_only))]
        return object_text(draw(st.permutations(base)))
    if shape == "nested_field":
        return object_text([*base, (field, draw(deeply_nested()))])
    if shape == "odd_field":
        return object_text([*base, (field, draw(odd_json_text))])
    if shape == "huge":
        # Past DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB) at the top end.
        return object_text([*base, (field, json.dumps(draw(padding(100_000, 3_000_000))))])
    text = dumps(draw(plausible), ascii_only)  # truncated
    return text[: draw(st.integers(0, max(len(text) - 1, 0)))]


TEXT_ENCODINGS = ("utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "utf-16-be", "utf-32", "latin-1")


def encode(text: str, encoding: str) -> Wire:
    """``text`` in ``encoding``; lone surrogates become the invalid UTF-8 (or UTF-16) they would be."""
    return Wire(text.encode(encoding, errors="surrogatepass" if encoding.startswith("utf") else "replace"))


def encoded(texts: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """Texts in every encoding a client might (wrongly) use, and now and then plain random bytes."""
    return st.one_of(
        st.builds(encode, texts, st.sampled_from(TEXT_ENCODINGS)),
        st.binary(max_size=64).map(Wire),
    )


JSON_CONTENT_TYPES = (
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=UTF-16",
    "application/json; charset=bogus",
    "application/json;;;",
    "APPLICATION/JSON",
    "text/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "multipart/form-data",
    "",
)

# ---------------------------------------------------------------------------
# Form bodies and query strings (RFC 6749 appendix B: application/x-www-form-urlencoded, UTF-8)
# ---------------------------------------------------------------------------
FORM_CONTENT_TYPES = (
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=utf-8",
    "application/x-www-form-urlencoded; charset=ISO-8859-1",
    "application/x-www-form-urlencoded; charset=utf-16",
    "application/x-www-form-urlencoded; charset=bogus",
    "application/x-www-form-urlencoded; charset=",
    "APPLICATION/X-WWW-FORM-URLENCODED",
    "application/json",
    "text/plain",
    "multipart/form-data; boundary=xyz",
    "multipart/form-data; boundary=",
    "multipart/form-data",
    "",
)


def urlencoded(pairs: Pairs, style: str) -> str:
    """``pairs`` as a query string in one of the spellings clients (and attackers) use."""
    if style == "plus":
        return urlencode(pairs, errors="surrogatepass")
    if style == "percent":
        return "&".join(
            f"{quote(k, safe='', errors='surrogatepass')}={quote(v, safe='', errors='surrogatepass')}" for k, v in pairs
        )
    if style == "latin-1":
        return urlencode(pairs, encoding="latin-1", errors="replace")
    if style == "semicolons":
        return ";".join(
            f"{quote_plus(k, errors='surrogatepass')}={quote_plus(v, errors='surrogatepass')}" for k, v in pairs
        )
    if style == "bare":  # no "=": keys only
        return "&&".join(quote_plus(k, errors="surrogatepass") for k, _ in pairs)
    return "&".join(f"{k}={v}" for k, v in pairs)  # raw: nothing escaped, stray % and & left as they are


# Printable ASCII but space: what may stand in a request target as it is (RFC 9112 §3.2).
_TARGET_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


def as_request_target(query: str) -> str:
    """``query`` as a client puts it on the request line: bytes outside printable ASCII percent-escaped.

    A lone surrogate becomes the escaped bytes of its (invalid) UTF-8 encoding.
    """
    return quote(query, safe=_TARGET_SAFE, errors="surrogatepass")


def mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any], one_in: int = 8) -> st.SearchStrategy[Any]:
    """``usual``, and ``odd`` once in ``one_in`` draws (shrinking towards ``usual``)."""
    return st.integers(0, one_in - 1).flatmap(lambda i: odd if i == one_in - 1 else usual)


URLENCODED_STYLES = ("plus", "plus", "percent", "latin-1", "semicolons", "bare", "raw")


def multipart(pairs: Pairs, boundary: str = "xyz") -> str:
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in pairs]
    return "".join(parts) + f"--{boundary}--\r\n"


@st.composite
def parameter_pairs(draw: st.DrawFn, names: Sequence[str], value_for: Callable[[str], st.SearchStrategy[str]]) -> Pairs:
    """Parameters of a request: each known one missing, present or repeated; unknown ones now and then."""
    pairs: Pairs = []
    for name in names:
        for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2]))):
            pairs.append((name, draw(value_for(name))))
    pairs += draw(st.lists(st.tuples(st.one_of(st.sampled_from(names), hostile_text), hostile_text), max_size=2))
    return draw(st.permutations(pairs))


@st.composite
def form_bodies(draw: st.DrawFn, pairs: st.SearchStrategy[Pairs]) -> tuple[bytes, str]:
    """A POST body carrying ``pairs`` and its Content-Type, in every encoding and framing."""
    params = draw(pairs)
    content_type = draw(st.sampled_from(FORM_CONTENT_TYPES))
    if content_type.startswith("multipart/") and draw(st.booleans()):
        text = multipart(params)
    elif content_type == "application/json" and draw(st.booleans()):
        text = dumps(dict(params))
    else:
        text = urlencoded(params, draw(st.sampled_from(URLENCODED_STYLES)))
    if draw(st.integers(0, 9)) == 0:
        text += "&pad=" + draw(padding(100_000, 3_000_000))  # past DATA_UPLOAD_MAX_MEMORY_SIZE at the top end
    encoding = draw(st.sampled_from(("utf-8", "utf-8", "utf-8", "latin-1", "utf-16")))
    return encode(text, encoding), content_type


# ---------------------------------------------------------------------------
# Authorization headers
# ---------------------------------------------------------------------------
def b64(raw: bytes, style: str) -> str:
    if style == "urlsafe":
        return base64.urlsafe_b64encode(raw).decode()
    if style == "unpadded":
        return base64.b64encode(raw).decode().rstrip("=")
    return base64.b64encode(raw).decode()


@st.composite
def basic_authorizations(draw: st.DrawFn, client_ids: st.SearchStrategy[str]) -> str:
    """``Authorization: Basic`` values (RFC 6749 §2.3.1, RFC 7617), well-formed and malformed in every way."""
    scheme = draw(
        st.sampled_from(["Basic ", "Basic ", "Basic ", "basic ", "BASIC ", "Basic  ", "Basic\t", "Basic", ""])
    )
    kind = draw(st.sampled_from(["quoted", "quoted", "unquoted", "no_colon", "bytes", "not_base64", "empty"]))
    client_id = draw(st.one_of(client_ids, hostile_text))
    secret = draw(hostile_text)
    style = draw(st.sampled_from(["standard", "standard", "urlsafe", "unpadded"]))
    if kind == "quoted":
        pair = f"{quote(client_id, safe='', errors='surrogatepass')}:{quote(secret, safe='', errors='surrogatepass')}"
        credentials = b64(pair.encode(), style)
    elif kind == "unquoted":
        credentials = b64(encode(f"{client_id}:{secret}", draw(st.sampled_from(["utf-8", "latin-1"]))), style)
    elif kind == "no_colon":
        credentials = b64(encode(client_id, "utf-8"), style)
    elif kind == "bytes":
        credentials = b64(draw(st.binary(max_size=48)), style)
    elif kind == "not_base64":
        credentials = draw(header_text)
    else:
        credentials = ""
    return scheme + credentials


# ---------------------------------------------------------------------------
# Response checks
# ---------------------------------------------------------------------------
# What must never reach a client: a stack trace, an exception's name, library internals, SQL.
LEAK_MARKERS = (
    "Traceback",
    'File "',
    "site-packages",
    "RecursionError",
    "ValueError",
    "TypeError",
    "KeyError",
    "AttributeError",
    "IndexError",
    "UnicodeDecodeError",
    "UnicodeEncodeError",
    "JSONDecodeError",
    "AssertionError",
    "RuntimeError",
    "IntegrityError",
    "DataError",
    "OperationalError",
    "ProgrammingError",
    "DatabaseError",
    "DoesNotExist",
    "MultipleObjectsReturned",
    "ValidationError",
    "validation error for",
    "errors.pydantic.dev",
    "<class '",
    " object at 0x",
    "psycopg",
    "sqlite3",
    "SELECT ",
    "INSERT INTO",
    "DELETE FROM",
    'UPDATE "',
    "syntax error at",
    "violates ",
)


def leaks(body: bytes) -> list[str]:
    """The leak markers found in a response body (decoded leniently: a leak is a leak in any encoding)."""
    text = body.decode("utf-8", errors="replace")
    return [marker for marker in LEAK_MARKERS if marker in text]


def assert_no_leak(body: bytes) -> None:
    found = leaks(body)
    assert not found, f"the response body leaks {found}: {body[:2000]!r}"


def assert_oauth_error(response: Any) -> dict[str, Any]:
    """RFC 6749 §5.2 / RFC 7591 §3.2.2: a JSON object with a string ``error``, never cached."""
    assert response["Content-Type"].startswith("application/json"), (response.status_code, response["Content-Type"])
    assert "no-store" in response.get("Cache-Control", ""), (response.status_code, response.get("Cache-Control"))
    body = json.loads(response.content)
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("error_description", ""), str), body
    return body


def clear_caches() -> None:
    """Forget every cached counter (rate limits, back-offs) so each example starts from nothing."""
    for cache in caches.all(initialized_only=False):
        cache.clear()


@contextmanager
def isolated_example() -> Iterator[None]:
    """One example of a ``django_db`` test: empty caches, and every row it writes undone afterwards.

    A savepoint inside the test's transaction, rolled back at the end (or when the example
    fails), so hypothesis can run hundreds of examples in one test without leftovers.
    """
    clear_caches()
    with transaction.atomic():
        yield
        transaction.set_rollback(True)
