"""Publish/subscribe: topics on a server, over a broker (in memory, or Redis across
processes and machines)."""

from .broker import Broker, MemoryBroker, make_broker
from .topics import PublishFailed, Topics

__all__ = ["Broker", "MemoryBroker", "PublishFailed", "Topics", "make_broker"]
