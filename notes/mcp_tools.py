"""The notes tools: the pattern to copy for an organisation's own tools.

Declare the scopes your tools need (they appear on the consent page), then write typed functions
whose first parameter is the ToolContext. Arguments and results are validated from the type hints.
Raise ToolError with a message for the person; any other exception is logged and reported as a
generic failure.
"""

from __future__ import annotations

from datetime import datetime

from django.core.exceptions import ValidationError
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from mcp_bridge.context import ToolContext
from mcp_bridge.registry import tool
from oauth_ext.scopes import register_scope

from . import services

register_scope("notes:write", "Add notes in your name")


class NoteOut(BaseModel):
    id: int
    text: str
    created: datetime


class NoteList(BaseModel):
    notes: list[NoteOut]


@tool(title="List my notes")
def list_notes(ctx: ToolContext, limit: int = Field(default=20, ge=1, le=100)) -> NoteList:
    """Your most recent notes, newest first."""
    notes = services.notes_for(user=ctx.user, limit=limit)
    return NoteList(notes=[NoteOut(id=n.pk, text=n.text, created=n.created) for n in notes])


@tool(title="Add a note", scopes=("mcp", "notes:write"))
def add_note(ctx: ToolContext, text: str = Field(description="What to remember", max_length=2000)) -> NoteOut:
    """Remember a short text for you; only you can list it."""
    try:
        note = services.note_add(user=ctx.user, text=text)
    except ValidationError as exc:
        raise ToolError("; ".join(exc.messages)) from None
    return NoteOut(id=note.pk, text=note.text, created=note.created)
