"""The chat protocol's messages: checking what a browser sends, building what the server
sends. No I/O here, so every rule can be tested on its own (the protocol itself is described
in :mod:`corral.examples.chat`).

Everything a client sends is untrusted: it is parsed with bounded sizes, and a string that
could not be sent back as UTF-8 (a lone surrogate, which JSON's ``\\ud800`` escape allows) is
refused here rather than crashing the connection when it is echoed to the room.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_ID",
    "MAX_NAME",
    "MAX_ROOM",
    "MAX_TEXT",
    "BadRequest",
    "Join",
    "Say",
    "chat_message",
    "dump",
    "error",
    "member_list",
    "parse",
    "presence",
    "replay",
    "welcome",
]

MAX_NAME = 32  # characters (code points), after trimming spaces
MAX_ROOM = 32
MAX_TEXT = 2000
MAX_ID = 64  # a message id a client hands back in ``since``

# Room names become broker topic names: word characters (any script), dot and dash only.
_ROOM = re.compile(r"[\w.\-]+")
# Control characters and surrogates never; format characters (bidi overrides, zero-width
# spaces) not in names, where they would let one member pass for another.
_NEVER = frozenset({"Cc", "Cs"})
_NOT_IN_NAMES = frozenset({"Cc", "Cs", "Cf", "Zl", "Zp"})


class BadRequest(Exception):
    """A client message the server refuses; ``code`` is what the client gets back."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Join:
    """Enter ``room`` as ``name``; ``since`` is the last message id the client has seen."""

    room: str
    name: str
    since: str | None = None


@dataclass(frozen=True, slots=True)
class Say:
    text: str


def _string(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise BadRequest(f"bad-{key}", f"{key} must be a string")
    return value


def _check_chars(value: str, key: str, refused: frozenset[str], allowed: str = "") -> None:
    for char in value:
        if char not in allowed and unicodedata.category(char) in refused:
            raise BadRequest(f"bad-{key}", f"{key} contains a control character")


def _name(obj: dict[str, Any]) -> str:
    name = _string(obj, "name").strip()
    if not name or len(name) > MAX_NAME:
        raise BadRequest("bad-name", f"name must be 1 to {MAX_NAME} characters")
    _check_chars(name, "name", _NOT_IN_NAMES)
    return name


def _room(obj: dict[str, Any]) -> str:
    room = _string(obj, "room").strip()
    if not room or len(room) > MAX_ROOM or _ROOM.fullmatch(room) is None:
        raise BadRequest("bad-room", f"room must be 1 to {MAX_ROOM} letters, digits, _ . -")
    return room


def _since(obj: dict[str, Any]) -> str | None:
    since = obj.get("since")
    if since is None:
        return None
    if not isinstance(since, str) or len(since) > MAX_ID:
        raise BadRequest("bad-since", "since must be a message id or null")
    return since


def _text(obj: dict[str, Any]) -> str:
    text = _string(obj, "text")
    if not text.strip() or len(text) > MAX_TEXT:
        raise BadRequest("bad-text", f"text must be 1 to {MAX_TEXT} characters, not blank")
    _check_chars(text, "text", _NEVER, allowed="\n\t")
    return text


def parse(message: str) -> Join | Say:
    """The request in one text message from a client, or :class:`BadRequest`."""
    try:
        obj = json.loads(message)
    except (ValueError, RecursionError):  # RecursionError: deeply nested arrays
        raise BadRequest("bad-json", "not a JSON object") from None
    if not isinstance(obj, dict):
        raise BadRequest("bad-json", "not a JSON object")
    kind = obj.get("type")
    if kind == "join":
        return Join(_room(obj), _name(obj), _since(obj))
    if kind == "say":
        return Say(_text(obj))
    raise BadRequest("bad-type", "type must be 'join' or 'say'")


# -- what the server sends --------------------------------------------------------------------


def dump(obj: dict[str, Any]) -> str:
    """Compact JSON, non-ASCII kept as is (shorter on the wire than \\u escapes)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def chat_message(
    message_id: str, room: str, name: str, text: str, time_ms: int
) -> dict[str, Any]:
    return {"type": "message", "id": message_id, "room": room, "name": name, "text": text,
            "time": time_ms}


def member_list(members: dict[str, str]) -> list[dict[str, str]]:
    """The broker's member -> name map as a list sorted by name (then id, for stability)."""
    return [{"id": member, "name": name}
            for member, name in sorted(members.items(), key=lambda item: (item[1], item[0]))]


def welcome(
    room: str, name: str, you: str, members: dict[str, str], history: list[dict[str, Any]]
) -> dict[str, Any]:
    return {"type": "welcome", "room": room, "name": name, "you": you,
            "members": member_list(members), "history": history}


def presence(
    room: str, members: dict[str, str], *, joined: dict[str, str] | None = None,
    left: dict[str, str] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "presence", "room": room, "members": member_list(members)}
    if joined is not None:
        out["joined"] = joined
    if left is not None:
        out["left"] = left
    return out


def error(code: str, detail: str) -> dict[str, Any]:
    return {"type": "error", "error": code, "detail": detail}


def replay(kept: list[str | bytes], since: str | None) -> list[dict[str, Any]]:
    """The kept messages of a room as the joiner gets them: all of them, or only those after
    ``since`` when that id is still kept (else all: the client drops what it already has).

    Entries that are not chat messages (another program publishing to the topic) are left
    out rather than trusted."""
    messages: list[dict[str, Any]] = []
    for raw in kept:
        try:
            entry = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        if isinstance(entry, dict) and entry.get("type") == "message" and "id" in entry:
            messages.append(entry)
    if since is not None:
        for index, entry in enumerate(messages):
            if entry["id"] == since:
                return messages[index + 1:]
    return messages
