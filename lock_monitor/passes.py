"""Reading one pass: every node once, into a snapshot, or a `PassFailed` naming what failed.

The reader keeps nothing between passes: the caller hands in what it remembers (the tracker
of first sightings, the stuck locks named last time), so the daemon's loop and `lock-monitor
locks` read the same way and only the loop publishes. The error wording lives here too, so a
failure reads the same in logs, pages and the CLI, with secrets scrubbed out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.exceptions import AskError, ClusterCrossSlotError, ClusterDownError, TryAgainError

from lock_monitor.config import RedisSettings, ScanSettings
from lock_monitor.connection import Target, describe_tls_error
from lock_monitor.deadline import PassBudget
from lock_monitor.locks import Lock
from lock_monitor.scanner import read_pages
from lock_monitor.snapshot import OLDEST_SHOWN, Snapshot, SnapshotBuilder
from lock_monitor.stuck_log import STUCK_LOG_LIMIT, StuckLocks, StuckMemory
from lock_monitor.tracker import LockTracker
from lock_monitor.wire import server_reading

if TYPE_CHECKING:
    from lock_monitor.passlocks import PassLocks

NodeStatus = tuple[tuple[str, bool], ...]  # (node, read in this pass), in the order tried

# Replies only a Cluster node gives: a plain client sees them when --redis-mode is wrong.
_CLUSTER_REPLIES = (ClusterCrossSlotError, AskError, ClusterDownError, TryAgainError)
CLUSTER_HINT = "this looks like a Redis Cluster node: use --redis-mode cluster"


class PassFailed(Exception):
    """A pass could not read every node; nothing from it is published.

    `failures` maps each node that failed ("topology" when the list of nodes itself could
    not be read) to one line; `nodes` says which nodes were tried and read.
    """

    def __init__(self, failures: dict[str, str], nodes: NodeStatus = ()) -> None:
        self.failures = failures
        self.nodes = nodes
        super().__init__("; ".join(f"{node}: {error}" for node, error in failures.items()))

    def reason(self, target: str) -> str:
        """The failures in one line for someone who named `target`: when the only node that
        failed is the target itself, it is not named a second time."""
        if list(self.failures) == [target]:
            return self.failures[target]
        return str(self)


@dataclass(frozen=True)
class PassResult:
    snapshot: Snapshot
    stuck: StuckLocks  # what the stuck-lock log needs: counts, the new ones in full
    nodes: NodeStatus  # every node, all read
    # Redis' own time in the pass on its busiest node (INFO commandstats); None where INFO is
    # refused. Waiting on a stalled, paused or distant Redis is not in it: pacing counts this.
    redis_seconds: float | None = None


def describe_error(exc: BaseException, settings: RedisSettings) -> str:
    """One line for logs, pages and the CLI: what to fix where that is known, no secret."""
    text = settings.scrub(describe_tls_error(exc) or f"{type(exc).__name__}: {exc}")
    if settings.mode == "standalone" and isinstance(exc, _CLUSTER_REPLIES):
        text = f"{text}; {CLUSTER_HINT}"
    return text or type(exc).__name__


def read_pass(
    target: Target,
    scan: ScanSettings,
    tracker: LockTracker,
    previously_stuck: StuckMemory,
    keep_oldest: int | None = OLDEST_SHOWN,
    each: Callable[[Sequence[Lock]], None] | None = None,
    held: PassLocks | None = None,
) -> PassResult:
    """Read every node of `target` once; return what the pass saw, or raise `PassFailed`.

    Every node is tried even after one fails, so the failure names all that are down. A
    failed pass leaves `tracker` as it was: a partial pass must not make locks look released.
    `keep_oldest=None` keeps every lock in the snapshot, not only the oldest few; `each`
    is handed every lock as it is read, a page at a time, unsorted. `held`, when given,
    receives every lock in the form the live set reconciles with.
    """
    started = time.monotonic()
    budget = PassBudget(scan.deadline_seconds)
    settings = target.settings
    cluster = settings.mode == "cluster"
    builder = SnapshotBuilder(keep_oldest=keep_oldest)
    stuck = StuckLocks(previously_stuck)
    failures: dict[str, str] = {}
    nodes: list[tuple[str, bool]] = []
    redis_seconds: list[float | None] = []

    def older_than() -> float:
        """The age past which a lock is handed over in full."""
        return -math.inf if each else builder.older_than()

    try:
        for name, client in target.nodes():
            try:
                budget.check()
                before = server_reading(client, budget)
                tracker.server_started(name, before.run_id)
                recall = tracker.recall(name, older_than)
                pages = read_pages(client, scan.pattern, scan.count, cluster, budget, recall)
                for page in pages:
                    wanted = STUCK_LOG_LIMIT - len(stuck.new)
                    verdict = tracker.add_page(page, name, older_than(), wanted, held)
                    if each:
                        each(verdict.older)
                    builder.add(verdict)
                    builder.keys_scanned += verdict.active + page.released
                    stuck.add(verdict, name)
                after = server_reading(client, budget).command_seconds
                redis_seconds.append(_spent(before.command_seconds, after))
            except Exception as exc:  # any node failing fails the pass, after trying all
                failures[name] = budget.exceeded or describe_error(exc, settings)
            nodes.append((name, name not in failures))
    except Exception as exc:  # the topology itself could not be read
        failures["topology"] = describe_error(exc, settings)
    if failures:
        tracker.abandon_pass()
        raise PassFailed(failures, tuple(nodes))
    stuck.finish(tracker.finish_pass())
    snapshot = builder.build(time.time(), time.monotonic() - started)
    known = [seconds for seconds in redis_seconds if seconds is not None]
    busiest = max(known, default=0.0) if len(known) == len(redis_seconds) else None
    return PassResult(snapshot, stuck, tuple(nodes), busiest)


def _spent(before: float | None, after: float | None) -> float | None:
    """Redis' time between two readings (0 if its counters were reset meanwhile)."""
    return None if before is None or after is None else max(0.0, after - before)
