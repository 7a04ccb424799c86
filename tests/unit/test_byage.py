"""Held locks in acquisition order."""

from __future__ import annotations

import bisect
import math
import random

from lock_monitor.byage import ByAge


def test_ordered_by_age_agrees_with_a_sorted_list() -> None:
    rng = random.Random(13)
    order, expected = ByAge(), list[tuple[float, bytes]]()
    for step in range(20_000):
        if expected and rng.random() < 0.45:
            entry = expected.pop(rng.randrange(len(expected)))
            order.remove(entry)
        else:
            entry = (float(rng.randrange(500)) if step % 7 else math.inf, b"%d" % step)
            bisect.insort(expected, entry)
            order.add(entry)
        if step % 97 == 0:
            cutoff = float(rng.randrange(520))
            assert order.count_before(cutoff) == bisect.bisect_left(expected, (cutoff,))
            assert order.first() == (expected[0] if expected else None)
            middle = expected[len(expected) // 2] if expected else None
            assert order.after(middle, 50) == expected[len(expected) // 2 + 1 :][:50]
    assert order.after(None, len(expected) + 1) == expected
