import gc

import pytest

from lock_monitor.passlocks import KEY_KEPT, PassLock, PassLocks, bounded
from tests.unit.live import columns

PAGES: list[list[PassLock]] = [
    [(b"lock:a", 1.5, True, False), (b"", 2.0, False, True), (b"\x00\r\n\xff", 3.25, True, True)],
    [],
    [(b"lock:" + b"x" * 150, 4.0, False, False)],
]
LOCKS = [lock for page in PAGES for lock in page]


def filled(pages: list[list[PassLock]]) -> PassLocks:
    """The pages extended one by one, as a pass hands them over."""
    held = PassLocks()
    for page in pages:
        held.extend(*columns(page))
    return held


def test_the_locks_of_a_pass_come_back_as_they_went_in() -> None:
    held = filled(PAGES)
    assert len(held) == len(LOCKS)
    assert list(held) == LOCKS
    assert [held[i] for i in range(-len(LOCKS), len(LOCKS))] == LOCKS * 2


@pytest.mark.parametrize("part", [slice(0, 2), slice(1, None), slice(None, None, 2), slice(-2, 10)])
def test_a_slice_is_the_slice_of_the_locks(part: slice) -> None:
    assert filled(PAGES)[part] == LOCKS[part]


def test_past_the_end_is_an_index_error() -> None:
    with pytest.raises(IndexError):
        filled(PAGES)[len(LOCKS)]


def test_the_garbage_collector_has_no_lock_to_walk() -> None:
    """A full collection visits what each tracked container refers to: what holds the
    locks refers to no object per lock (numbers in arrays, keys in one buffer)."""
    page = [(b"lock:%d" % i, float(i), True, False) for i in range(10_000)]
    columns = vars(filled([page])).values()
    assert sum(len(gc.get_referents(column)) for column in columns) < 10


def test_a_huge_key_is_kept_bounded() -> None:
    """Memory must not follow the size of a hostile key name: the pass's copy of a key is
    what the live set keeps of it."""
    huge = b"lock:" + b"k" * 100_000
    held = filled([[(huge, 1.0, True, False), (b"lock:short", 2.0, True, False)]])
    assert [key for key, _, _, _ in held] == [bounded(huge), b"lock:short"]
    assert len(held[0][0]) == KEY_KEPT + 16
