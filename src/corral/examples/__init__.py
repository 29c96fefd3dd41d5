"""Runnable examples: ``python -m corral.examples.echo``, ``python -m corral.examples.fuzzclient``."""
