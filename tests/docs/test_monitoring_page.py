"""docs/how-to/monitoring.md names every metric the /metrics route serves and every field of
``ServerStats``, and nothing that does not exist."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import corral
from corral.metrics import CorralCollector
from corral.server.stats import CLOSE_KINDS, HANDSHAKE_OUTCOMES

PAGE = Path(__file__).parents[2] / "docs" / "how-to" / "monitoring.md"


def a_snapshot() -> corral.ServerStats:
    values = {f.name: 0 for f in dataclasses.fields(corral.ServerStats)}
    values.update(handshakes=dict.fromkeys(HANDSHAKE_OUTCOMES, 0), http_responses={200: 1},
                  closes=dict.fromkeys(CLOSE_KINDS, 0), broker="memory",
                  broker_connected=True, started_at=0.0, taken_at=0.0)
    return corral.ServerStats(**values)


def test_every_metric_served_is_on_the_page_and_only_those() -> None:
    served = {sample.name for family in CorralCollector(lambda: [a_snapshot()]).collect()
              for sample in family.samples}
    on_page = set(re.findall(r"\bcorral_[a-z_]+", PAGE.read_text()))
    assert served == on_page


def test_every_stats_field_and_outcome_is_described() -> None:
    text = PAGE.read_text()
    for field in dataclasses.fields(corral.ServerStats):
        assert f"`{field.name}`" in text, field.name
    for word in (*HANDSHAKE_OUTCOMES, *CLOSE_KINDS):
        assert f"`{word}`" in text, word
