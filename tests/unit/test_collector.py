"""The garbage collector's settings every carebank process applies before its work."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from infra import collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_collector")
def test_settling_freezes_what_exists_and_collects_young_objects_less_often() -> None:
    gc.unfreeze()
    survivor = [object()]  # a container tracked by the collector, alive when the process settles

    collector.settle()

    assert gc.get_threshold()[0] == collector.YOUNG_THRESHOLD > 700
    assert gc.get_freeze_count() > 0
    assert not any(o is survivor for o in gc.get_objects())  # frozen: full collections no longer walk it
