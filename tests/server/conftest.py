"""Fixtures shared by the socket tests: no unexpected error logged, no task left behind.

Test modules opt in with
``pytestmark = pytest.mark.usefixtures("clean_logs", "no_leftover_tasks")``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Iterator

import pytest


@pytest.fixture
def crash_expected() -> None:
    """Requested by tests where a handler crashes on purpose: its report is the one error."""


@pytest.fixture
def errors_expected() -> None:
    """Requested by tests where an application error is logged on purpose."""


@pytest.fixture
def clean_logs(caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test on any ERROR record ("Task exception was never retrieved" included),
    except a handler's own crash report where ``crash_expected`` is requested, or any error
    where ``errors_expected`` is."""
    caplog.set_level(logging.WARNING)
    yield
    gc.collect()  # a task that failed unobserved reports itself when collected
    if "errors_expected" in request.fixturenames:
        return
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    if "crash_expected" in request.fixturenames:
        errors = [r for r in errors if not r.getMessage().endswith("crashed")]
    assert not errors, [r.getMessage() for r in errors]


@pytest.fixture
async def no_leftover_tasks() -> AsyncIterator[None]:
    yield
    for _ in range(3):
        await asyncio.sleep(0)
    leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not leftovers, leftovers
