"""Runnable examples: ``python -m corral.examples.echo`` and
``python -m corral.examples.fuzzclient``."""
