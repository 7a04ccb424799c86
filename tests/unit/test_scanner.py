import math

from lock_monitor.scanner import _known_page
from lock_monitor.tracker import LockTracker
from tests.unit.pages import NOW, RawLock, pages_of

LOCKS = [RawLock(b"held", b"token-1", 20_000), RawLock(b"renewed", b"token-2", 20_000)]
GONE = RawLock(b"released", b"token-3", 20_000)


def test_a_known_lock_released_between_scan_and_its_ttl_is_counted_released() -> None:
    """SCAN named it, its PTTL found it gone (-2): neither held nor read again, and the
    tracker tells it gone at the end of the pass; a renewed one is read again in full."""
    tracker = LockTracker(30)
    for page in pages_of([*LOCKS, GONE]):
        tracker.add_page(page, "node", -math.inf, 0)
    tracker.finish_pass()
    recall = tracker.recall("node", lambda: math.inf)
    assert recall is not None
    keys = [b"held", b"renewed", b"released"]
    later = NOW + 5
    known = recall.known(keys, later)
    assert all(known)
    page, changed = _known_page(later, later, keys, known, [15_000, 60_000, -2])
    assert (page.keys, page.pttls, page.released, changed) == ([b"held"], [15_000], 1, [b"renewed"])
    assert tracker.add_page(page, "node", math.inf, 0).active == 1
    [read_again] = pages_of([RawLock(b"renewed", b"token-2", 60_000, now=later)])
    assert tracker.add_page(read_again, "node", math.inf, 0).active == 1
    assert len(tracker.finish_pass()) == 1  # the released one
