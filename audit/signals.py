"""Signals of the audit trail, for observers (metrics) that must not be written into every caller."""

from __future__ import annotations

from django.dispatch import Signal

# Sent after a row is written (not for rows the anonymous allowance suppressed); ``event`` is the
# AuditEvent. Receivers run inline on the request's path: they must be cheap and must not raise.
event_recorded = Signal()
