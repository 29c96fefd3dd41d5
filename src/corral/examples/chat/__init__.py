"""A chat demo: rooms as pub/sub topics, the page served from the same port.

    python -m corral.examples.chat [--host 127.0.0.1] [--port 8000] [--broker redis://...]
    corral run corral.examples.chat:app

Open http://127.0.0.1:8000/ in two windows. The page (``static/``: plain HTML and
JavaScript on the browser's WebSocket API) talks JSON text messages over ``/ws``.

Client to server:

- ``{"type": "join", "room": R, "name": N, "since": ID or null}``: enter room ``R`` (1-32
  letters, digits, ``_ . -``) as ``N`` (1-32 characters). A second ``join`` leaves the
  previous room first. ``since`` is the last message id the client saw, when it comes back.
- ``{"type": "say", "text": T}``: ``T`` is 1-2000 characters, not blank.

Server to client:

- ``{"type": "welcome", "room", "name", "you", "members", "history"}``: the answer to a
  join. ``you`` is this connection's member id; ``members`` is ``[{"id", "name"}, ...]``;
  ``history`` the room's kept messages, oldest first, only those after ``since`` when that
  id is still kept (else all of them: the client skips ids it has already shown).
- ``{"type": "message", "id", "room", "name", "text", "time"}``: a chat message, to the
  whole room, sender included. The server sets ``id`` (unique across processes), ``name``
  and ``time`` (ms since the epoch); the room keeps the last N (``--history``).
- ``{"type": "presence", "room", "members", "joined" or "left": {"id", "name"}}``: to the
  whole room when someone joins or leaves (closing the connection leaves), with the member
  list as the publishing process saw it. Updates from several processes may cross, while
  one member's join and leave never do: a client keeping an exact list applies ``joined``
  and ``left`` to the welcome's list, as the page does.
- ``{"type": "error", "error": CODE, "detail": TEXT}``: a refused request; the connection
  stays open. CODE is ``bad-json``, ``bad-type``, ``bad-room``, ``bad-name``, ``bad-text``,
  ``bad-since`` or ``not-joined``.

The joiner is subscribed before the welcome is built, so messages and presence updates may
arrive before it: a client holds them until the welcome, then skips message ids it has.

Close codes: 1003 for a binary message, 1008 after 20 refused requests, 1009 for a message
over 32 KiB, 1013 when the broker fails (the page reconnects later), 1001 on shutdown.
"""

from .server import DEFAULT_HISTORY, ChatHandler, app, main

__all__ = ["DEFAULT_HISTORY", "ChatHandler", "app", "main"]
