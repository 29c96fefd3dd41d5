"""A Django project with Django Channels served by ``corral run``: a plain Django view over
the ``http`` scope, and Channels consumers (echo, and a group broadcast through the in-memory
channel layer) over the ``websocket`` scope. The test writes the minimal project itself and
runs corral in a process of its own (Django's settings are global to a process)."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import corral
from helpers import free_port

pytest.importorskip("django")
pytest.importorskip("channels")

pytestmark = pytest.mark.usefixtures("no_leftover_tasks")

PROJECT = {
    "djsite/__init__.py": "",
    "djsite/settings.py": """
        SECRET_KEY = "test-only"
        DEBUG = False
        ALLOWED_HOSTS = ["*"]
        INSTALLED_APPS = ["channels"]
        ROOT_URLCONF = "djsite.urls"
        ASGI_APPLICATION = "djsite.asgi.application"
        CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
        DATABASES = {}
        USE_TZ = True
    """,
    "djsite/urls.py": """
        from django.http import HttpResponse, JsonResponse
        from django.urls import path

        def hello(request):
            return HttpResponse("hello from django")

        def echo_post(request):
            return JsonResponse({"method": request.method, "body": request.body.decode()})

        urlpatterns = [path("hello/", hello), path("echo/", echo_post)]
    """,
    "djsite/consumers.py": """
        from channels.generic.websocket import AsyncWebsocketConsumer

        import corral.asgi

        class Echo(AsyncWebsocketConsumer):
            async def receive(self, text_data=None, bytes_data=None):
                await self.send(text_data=text_data, bytes_data=bytes_data)

        class Room(AsyncWebsocketConsumer):
            async def connect(self):
                await self.channel_layer.group_add("room", self.channel_name)
                await self.accept()

            async def disconnect(self, code):
                await self.channel_layer.group_discard("room", self.channel_name)

            async def receive(self, text_data=None, bytes_data=None):
                await self.channel_layer.group_send("room", {"type": "said", "text": text_data})

            async def said(self, event):
                await self.send(text_data=event["text"])

        class News(AsyncWebsocketConsumer):
            # corral's pub/sub extension from a consumer: corral writes to the members.

            async def connect(self):
                await self.accept()
                corral.asgi.subscribe(self.scope, "news")

            async def receive(self, text_data=None, bytes_data=None):
                await corral.asgi.publish(self.scope, "news", text_data)
    """,
    "djsite/asgi.py": """
        import os

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djsite.settings")

        from django.core.asgi import get_asgi_application

        django_http = get_asgi_application()

        from channels.routing import ProtocolTypeRouter, URLRouter
        from django.urls import path

        from djsite.consumers import Echo, News, Room

        application = ProtocolTypeRouter({
            "http": django_http,
            "websocket": URLRouter([path("ws/echo/", Echo.as_asgi()),
                                    path("ws/room/", Room.as_asgi()),
                                    path("ws/news/", News.as_asgi())]),
        })
    """,
}


def fetch(url: str, data: bytes | None = None) -> bytes:
    for _ in range(200):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=data),
                                        timeout=5) as response:
                return bytes(response.read())
        except urllib.error.URLError as exc:
            if not isinstance(exc.reason, ConnectionRefusedError):
                raise
            time.sleep(0.05)  # not listening yet
    raise AssertionError(f"{url} never answered")


async def test_a_django_view_and_channels_consumers(tmp_path: Path) -> None:
    for name, text in PROJECT.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corral", "run", "djsite.asgi:application", "--port",
        str(port), cwd=tmp_path, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    members: list[corral.AsyncWebSocket] = []
    try:
        base = f"http://127.0.0.1:{port}"
        assert await asyncio.to_thread(fetch, f"{base}/hello/") == b"hello from django"
        assert await asyncio.to_thread(fetch, f"{base}/echo/", b"posted") == (
            b'{"method": "POST", "body": "posted"}')
        async with corral.connect(f"ws://127.0.0.1:{port}/ws/echo/") as echo:
            await echo.send("ping")
            assert await asyncio.wait_for(echo.recv(), 10) == "ping"
            await echo.send(b"\x01\x02")
            assert await asyncio.wait_for(echo.recv(), 10) == b"\x01\x02"
        for _ in range(3):
            member = await corral.connect(f"ws://127.0.0.1:{port}/ws/room/")
            assert isinstance(member, corral.AsyncWebSocket)
            members.append(member)
        await members[0].send("hello, group")
        for member in members:
            assert await asyncio.wait_for(member.recv(), 10) == "hello, group"
        readers = [await corral.connect(f"ws://127.0.0.1:{port}/ws/news/") for _ in range(2)]
        members += readers  # type: ignore[arg-type]
        await asyncio.sleep(0.2)  # connect() returns with the 101: let both subscribe
        await readers[0].send("extra!")
        for reader in readers:
            assert await asyncio.wait_for(reader.recv(), 10) == "extra!"
    finally:
        for member in members:
            await member.close()
        if process.returncode is None:
            process.terminate()
        _, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, stderr.decode(errors="replace")
