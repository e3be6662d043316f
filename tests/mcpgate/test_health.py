"""/healthz says the process answers; /readyz says it can serve (the database answers). Neither is ever cached."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import OperationalError
from django.db.backends.utils import CursorWrapper
from django.test import Client as HttpClient

from tests.conftest import CLIENT_ADDR, INTERNAL, PUBLIC

pytestmark = pytest.mark.django_db


def test_healthz_answers_ok_without_touching_the_database(http: HttpClient, django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(0):
        response = http.get("/healthz", HTTP_HOST=INTERNAL)

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"


def test_readyz_answers_ok_once_the_database_answers(http: HttpClient, django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(1):
        response = http.get("/readyz", HTTP_HOST=INTERNAL)

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"


def test_readyz_is_503_with_retry_after_while_the_database_is_away(
    http: HttpClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("connection to server at 127.0.0.1, port 5432 failed: Connection refused")

    monkeypatch.setattr(CursorWrapper, "execute", refuse)
    response = http.get("/readyz", HTTP_HOST=INTERNAL)

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "reason": "database"}
    assert response["Retry-After"] == "5"
    assert response["Cache-Control"] == "no-store"
    assert [r.getMessage() for r in caplog.records if r.name == "mcpgate.observability.health"] == [
        "not ready: the database does not answer (OperationalError: connection to server at 127.0.0.1, "
        "port 5432 failed: Connection refused)"
    ]
    assert "Traceback" not in caplog.text


def test_readyz_needs_no_sign_in_on_the_public_host_from_any_address(http: HttpClient) -> None:
    response = http.get("/readyz", HTTP_HOST=PUBLIC, REMOTE_ADDR=CLIENT_ADDR)

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_on_an_unknown_host_is_refused_as_healthz_is(http: HttpClient) -> None:
    healthz = http.get("/healthz", HTTP_HOST="evil.test")
    readyz = http.get("/readyz", HTTP_HOST="evil.test")

    assert (healthz.status_code, readyz.status_code) == (400, 400)
    assert readyz.content == healthz.content
