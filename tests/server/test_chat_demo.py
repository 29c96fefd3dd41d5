"""The chat demo's protocol (corral.examples.chat) with corral clients on a real server.

Joining, saying, the history a joiner gets (the last N only, or what follows ``since`` when it
comes back, so nothing twice), presence on join, leave, room switch and dropped TCP, refused
requests that leave the connection open, garbage that closes it, and rooms kept apart.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

import corral
from corral.examples.chat import app
from corral.examples.chat.messages import (
    MAX_NAME,
    MAX_ROOM,
    MAX_TEXT,
    BadRequest,
    Join,
    Say,
    parse,
    replay,
)
from corral.protocol.frames import Opcode, serialize_frame

pytestmark = pytest.mark.usefixtures("clean_logs", "no_leftover_tasks")

WAIT = 2.0  # seconds: the longest any single answer may take


@contextlib.asynccontextmanager
async def serving(history: int = 50) -> AsyncIterator[corral.Server]:
    async with corral.serve(app(history=history), "127.0.0.1", 0) as server:
        yield server


class Peer:
    """A chat client on a corral client connection, one JSON message at a time."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, server: corral.Server) -> AsyncIterator[Peer]:
        async with corral.connect(f"ws://127.0.0.1:{server.port}/ws", compression=None) as ws:
            yield cls(ws)

    async def send(self, **request: Any) -> None:
        await self.ws.send(json.dumps(request))

    async def recv(self) -> dict[str, Any]:
        message = await asyncio.wait_for(self.ws.recv(), WAIT)
        assert isinstance(message, str)
        decoded = json.loads(message)
        assert isinstance(decoded, dict)
        return decoded

    async def expect(self, kind: str) -> dict[str, Any]:
        message = await self.recv()
        assert message["type"] == kind, message
        return message

    async def join(self, room: str, name: str, since: str | None = None) -> dict[str, Any]:
        """Join; return the welcome, after checking the room was told (this peer too)."""
        await self.send(type="join", room=room, name=name, since=since)
        welcome = await self.expect("welcome")
        assert (welcome["room"], welcome["name"]) == (room, name)
        presence = await self.expect("presence")
        assert presence["joined"] == {"id": welcome["you"], "name": name}
        assert presence["members"] == welcome["members"]
        return welcome

    async def say(self, text: str) -> dict[str, Any]:
        """Say ``text``; return the message as the room got it (the sender gets it too)."""
        await self.send(type="say", text=text)
        message = await self.expect("message")
        assert message["text"] == text
        return message

    async def closed(self) -> tuple[int, str]:
        """Read until the server closes; its close code and reason. (Reading, not
        ``wait_closed``: the client answers the close once the application has read all.)"""
        with pytest.raises(corral.ConnectionClosed) as info:
            while True:
                await self.recv()
        return info.value.code, info.value.reason

    async def nothing_else(self) -> None:
        """Nothing is waiting: the next message is the answer to a fresh bad request."""
        await self.send(type="sentinel")
        assert (await self.expect("error"))["error"] == "bad-type"


def names(members: list[dict[str, str]]) -> list[str]:
    return [member["name"] for member in members]


async def raw_join(port: int, room: str, name: str) -> tuple[asyncio.StreamReader,
                                                             asyncio.StreamWriter]:
    """A client on a raw socket that joins, so the test can drop its TCP connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    assert head.startswith(b"HTTP/1.1 101")
    join = json.dumps({"type": "join", "room": room, "name": name}).encode()
    writer.write(serialize_frame(Opcode.TEXT, join, mask=os.urandom(4)))
    return reader, writer


# -- joining and talking ----------------------------------------------------------------------


async def test_join_say_and_presence() -> None:
    async with serving() as server, Peer.connect(server) as ann, Peer.connect(server) as bob:
        welcome = await ann.join("lobby", "ann")
        assert welcome["history"] == []
        assert welcome["members"] == [{"id": welcome["you"], "name": "ann"}]

        bob_welcome = await bob.join("lobby", "bob")
        assert names(bob_welcome["members"]) == ["ann", "bob"]
        seen_by_ann = await ann.expect("presence")
        assert seen_by_ann["joined"] == {"id": bob_welcome["you"], "name": "bob"}
        assert names(seen_by_ann["members"]) == ["ann", "bob"]

        sent = await ann.say("hello, bob")
        got = await bob.expect("message")
        assert got == sent
        assert (sent["room"], sent["name"]) == ("lobby", "ann")
        assert isinstance(sent["time"], int) and isinstance(sent["id"], str)

        reply = await bob.say("h\u00e9llo \u20ac \U0001f600\nsecond line")
        assert await ann.expect("message") == reply
        assert reply["id"] != sent["id"]
        await ann.nothing_else()
        await bob.nothing_else()


async def test_same_name_twice_is_two_members() -> None:
    """Presence is per connection: two tabs under one name are two entries."""
    async with serving() as server, Peer.connect(server) as one, Peer.connect(server) as two:
        first = await one.join("lobby", "ann")
        second = await two.join("lobby", "ann")
        assert first["you"] != second["you"]
        assert names(second["members"]) == ["ann", "ann"]


# -- history ----------------------------------------------------------------------------------


async def test_history_on_join_keeps_the_last_n() -> None:
    async with serving(history=3) as server, Peer.connect(server) as ann:
        await ann.join("lobby", "ann")
        said = [await ann.say(f"message {i}") for i in range(5)]
        async with Peer.connect(server) as bob:
            welcome = await bob.join("lobby", "bob")
        assert welcome["history"] == said[-3:]


async def test_no_history_kept_with_zero() -> None:
    async with serving(history=0) as server, Peer.connect(server) as ann:
        await ann.join("lobby", "ann")
        await ann.say("not kept")
        async with Peer.connect(server) as bob:
            assert (await bob.join("lobby", "bob"))["history"] == []


async def test_since_replays_only_what_was_missed() -> None:
    async with serving() as server, Peer.connect(server) as ann:
        await ann.join("lobby", "ann")
        async with Peer.connect(server) as bob:
            await bob.join("lobby", "bob")
            await ann.expect("presence")
            seen = [await ann.say(f"before {i}") for i in range(2)]
            assert [await bob.expect("message") for _ in seen] == seen
        assert names((await ann.expect("presence"))["members"]) == ["ann"]

        missed = [await ann.say(f"while away {i}") for i in range(2)]
        async with Peer.connect(server) as bob:
            welcome = await bob.join("lobby", "bob", since=seen[-1]["id"])
            assert welcome["history"] == missed  # nothing shown twice
            await ann.expect("presence")
            # Already up to date: nothing.
            async with Peer.connect(server) as bob2:
                assert (await bob2.join("lobby", "bob", since=missed[-1]["id"]))["history"] == []
                # An id the room no longer keeps (or never had): everything it keeps.
                async with Peer.connect(server) as bob3:
                    unknown = await bob3.join("lobby", "bob", since="0" * 32)
                    assert unknown["history"] == seen + missed


# -- presence ---------------------------------------------------------------------------------


async def test_presence_on_close_and_on_dropped_tcp() -> None:
    async with serving() as server, Peer.connect(server) as ann:
        await ann.join("lobby", "ann")
        async with Peer.connect(server) as bob:
            bob_id = (await bob.join("lobby", "bob"))["you"]
            await ann.expect("presence")
        left = await ann.expect("presence")
        assert left["left"] == {"id": bob_id, "name": "bob"}
        assert names(left["members"]) == ["ann"]

        _, writer = await raw_join(server.port, "lobby", "carol")
        joined = await ann.expect("presence")
        assert joined["joined"]["name"] == "carol"
        writer.transport.abort()  # no close frame: TCP just ends
        left = await ann.expect("presence")
        assert left["left"] == joined["joined"]
        assert names(left["members"]) == ["ann"]
        await ann.nothing_else()


async def test_switching_rooms_leaves_the_first() -> None:
    async with serving() as server, Peer.connect(server) as ann, Peer.connect(server) as bob:
        await ann.join("lobby", "ann")
        bob_id = (await bob.join("lobby", "bob"))["you"]
        await ann.expect("presence")

        # bob, unsubscribed first, does not hear his own leave: his next message is the welcome.
        await bob.send(type="join", room="garden", name="bob")
        assert (await ann.expect("presence"))["left"] == {"id": bob_id, "name": "bob"}
        assert (await bob.expect("welcome"))["members"] == [{"id": bob_id, "name": "bob"}]
        assert names((await bob.expect("presence"))["members"]) == ["bob"]

        await ann.say("anyone?")
        await bob.nothing_else()  # no longer in the lobby


async def test_rooms_are_isolated() -> None:
    async with serving() as server, Peer.connect(server) as ann, Peer.connect(server) as bob:
        await ann.join("a", "ann")
        await bob.join("b", "bob")
        in_a = await ann.say("for room a")
        await bob.say("for room b")
        await ann.nothing_else()
        await bob.nothing_else()
        async with Peer.connect(server) as carol:
            welcome = await carol.join("a", "carol")
            assert welcome["history"] == [in_a]
            assert names(welcome["members"]) == ["ann", "carol"]
        await bob.nothing_else()  # b heard neither carol's join nor her leave


# -- refused requests and garbage -------------------------------------------------------------


BAD_REQUESTS = [
    ("not json", "bad-json"),
    ("[1, 2]", "bad-json"),
    ("[" * 20000, "bad-json"),
    ('{"type": "dance"}', "bad-type"),
    ('{"room": "lobby", "name": "ann"}', "bad-type"),
    ('{"type": "say", "text": "before joining"}', "not-joined"),
    ('{"type": "join", "room": "lobby"}', "bad-name"),
    ('{"type": "join", "room": "lobby", "name": "   "}', "bad-name"),
    (json.dumps({"type": "join", "room": "lobby", "name": "x" * (MAX_NAME + 1)}), "bad-name"),
    ('{"type": "join", "room": "lobby", "name": "a\\u0007b"}', "bad-name"),
    ('{"type": "join", "room": "lobby", "name": "ann\\u202e"}', "bad-name"),
    ('{"type": "join", "room": "lobby", "name": 7}', "bad-name"),
    ('{"type": "join", "name": "ann"}', "bad-room"),
    ('{"type": "join", "room": "two words", "name": "ann"}', "bad-room"),
    ('{"type": "join", "room": "a/b", "name": "ann"}', "bad-room"),
    (json.dumps({"type": "join", "room": "r" * (MAX_ROOM + 1), "name": "ann"}), "bad-room"),
    ('{"type": "join", "room": "lobby", "name": "ann", "since": 5}', "bad-since"),
]


async def test_bad_requests_get_an_error_and_the_connection_stays() -> None:
    async with serving() as server, Peer.connect(server) as peer:
        for request, code in BAD_REQUESTS:
            await peer.ws.send(request)
            answer = await peer.expect("error")
            assert answer["error"] == code, (request, answer)
            assert answer["detail"]
        await peer.join("lobby", "ann")
    # A new connection: twenty refusals on one would close it (see the 1008 test).
    async with serving() as server, Peer.connect(server) as peer:
        await peer.join("lobby", "ann")
        for text, code in [("", "bad-text"), (" \n\t", "bad-text"), (None, "bad-text"),
                           ("x" * (MAX_TEXT + 1), "bad-text"), ("nul \x00", "bad-text")]:
            await peer.send(type="say", text=text)
            assert (await peer.expect("error"))["error"] == code
        # A lone surrogate cannot be sent back as UTF-8: refused, not a crash.
        await peer.ws.send('{"type": "say", "text": "half \\ud800 a pair"}')
        assert (await peer.expect("error"))["error"] == "bad-text"
        assert (await peer.say("x" * MAX_TEXT))["text"] == "x" * MAX_TEXT
        assert (await peer.say("tab\tand\nnewline"))["name"] == "ann"


async def test_binary_closes_with_1003() -> None:
    async with serving() as server, Peer.connect(server) as peer:
        await peer.ws.send(b"\x00\x01")
        assert (await peer.closed())[0] == 1003


async def test_too_many_bad_requests_close_with_1008() -> None:
    async with serving() as server, Peer.connect(server) as peer:
        for _ in range(20):
            await peer.ws.send("garbage")
        errors = 0
        with pytest.raises(corral.ConnectionClosedError) as info:
            while True:  # read the answers: an unread queue would stop the client reading
                errors += (await peer.expect("error"))["error"] == "bad-json"
        assert (info.value.code, errors) == (1008, 20)


async def test_oversized_message_closes_with_1009() -> None:
    async with serving() as server, Peer.connect(server) as peer:
        await peer.send(type="say", text="x" * 40_000)
        assert (await peer.closed())[0] == 1009


async def test_a_broker_failure_closes_with_1013() -> None:
    """The page reconnects after 1013 (try again later); the handler does not crash."""
    async with serving() as server, Peer.connect(server) as peer:
        await peer.join("lobby", "ann")
        await server.broker.close()  # the memory broker now refuses every publish
        await peer.send(type="say", text="into the void")
        assert await peer.closed() == (1013, "broker unavailable")


# -- the pieces without a socket --------------------------------------------------------------


def test_parse_trims_and_accepts_unicode() -> None:
    join = parse('{"type": "join", "room": "caf\u00e9-1.b_c", "name": "  Zo\u00eb  ", "x": 1}')
    assert join == Join("caf\u00e9-1.b_c", "Zo\u00eb", None)
    assert parse('{"type": "say", "text": " padded "}') == Say(" padded ")
    with pytest.raises(BadRequest) as info:
        parse("null")
    assert info.value.code == "bad-json"


def test_replay_skips_what_is_not_a_chat_message() -> None:
    first = json.dumps({"type": "message", "id": "1", "text": "a"})
    second = json.dumps({"type": "message", "id": "2", "text": "b"})
    kept: list[str | bytes] = [first, "not json", b'{"type": "presence"}', second]
    assert [m["id"] for m in replay(kept, None)] == ["1", "2"]
    assert [m["id"] for m in replay(kept, "1")] == ["2"]
    assert replay(kept, "2") == []


def test_app_refuses_a_negative_history() -> None:
    with pytest.raises(ValueError):
        app(history=-1)
