"""Progress reporting: one bar per stage, each with its own unit."""

from __future__ import annotations

from collections.abc import Callable

from noisyclean.reporting import staged


def test_each_stage_gets_one_bar_in_its_own_unit() -> None:
    opened: list[tuple[str, str]] = []
    updates: list[tuple[str, int, int]] = []

    def track(description: str, unit: str) -> Callable[[int, int], None]:
        opened.append((description, unit))
        return lambda done, total: updates.append((description, done, total))

    update = staged(track, "duplicates")
    calls = [("images", 0, 4), ("images", 4, 4), ("pairs", 0, 2), ("pairs", 2, 2)]
    for stage, done, total in calls:
        update(stage, done, total)
    assert opened == [("duplicates images", "image"), ("duplicates pairs", "pair")]
    assert updates[-1] == ("duplicates pairs", 2, 2) and len(updates) == 4
    staged(track, "neighbours")("train", 1, 10)
    assert opened[-1] == ("neighbours train", "step")
