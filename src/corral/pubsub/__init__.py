"""Publish/subscribe topics. One process for now (``Topics``); Redis and workers later."""

from .topics import Topics

__all__ = ["Topics"]
