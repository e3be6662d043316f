"""The audit trail as the servers under test leave it: their tool-call rows come in batches (audit.batch)."""

from __future__ import annotations

import time

from audit.models import AuditEvent, AuditKind

# The servers run the production default, MCPGATE_AUDIT_BATCH_SECONDS=0.1: each worker writes its
# tool-call rows at most this long after the call (plus the write itself).
BATCH_SECONDS = 0.1


def settled_tool_calls(*, at_least: int = 0, within: float = 10.0) -> list[AuditEvent]:
    """The tools/call rows, oldest first, once the servers' batches are in: at least ``at_least`` of them,
    and none added for five batch intervals (every worker has written what it held)."""
    deadline = time.monotonic() + within
    rows = _tool_calls()
    while time.monotonic() < deadline:
        time.sleep(5 * BATCH_SECONDS)
        again = _tool_calls()
        if len(again) == len(rows) and len(rows) >= at_least:
            return rows
        rows = again
    raise AssertionError(f"tool-call rows still changing after {within} s: {len(rows)} (at least {at_least} expected)")


def _tool_calls() -> list[AuditEvent]:
    # By when the call was made, as the console orders them: each worker inserts its own batch, so the
    # order of primary keys is the order of the batches, not of the calls made through two workers.
    return list(AuditEvent.objects.filter(event=AuditKind.TOOL_CALL).order_by("created", "pk"))
