"""A deadline heap with one live deadline per key, that stays bounded however often deadlines move.

Moving a key's deadline pushes a new entry and leaves the old one on the heap as stale (a version number tells
them apart): O(log n) per move. Stale entries are dropped when they reach the top and, so that a flood of moves
(50,000 duplicate heartbeats to one crib) cannot grow the heap without bound, the heap is rebuilt from its live
entries whenever it holds more than ``2 * keys + SLACK`` entries: O(n) once per n moves, O(1) amortised.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

SLACK = 64


class DeadlineHeap(Generic[K]):
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._live: dict[K, tuple[float, int]] = {}
        """key -> (due, version) of its one live entry."""
        self._version = 0

    def __len__(self) -> int:
        """Entries on the heap, stale ones included (what the bound is about)."""
        return len(self._heap)

    @property
    def live(self) -> int:
        return len(self._live)

    def set(self, key: K, due: float | None) -> None:
        """Give ``key`` the deadline ``due`` (None: no deadline), replacing the one it had."""
        if due is None:
            self._live.pop(key, None)
            return
        current = self._live.get(key)
        if current is not None and current[0] == due:
            return  # unchanged: nothing to push
        self._version += 1
        self._live[key] = (due, self._version)
        heapq.heappush(self._heap, (due, self._version, key))
        if len(self._heap) > 2 * len(self._live) + SLACK:
            self._compact()

    def due_of(self, key: K) -> float | None:
        current = self._live.get(key)
        return None if current is None else current[0]

    def peek(self) -> float | None:
        """The earliest live deadline."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> K | None:
        """The key of the earliest live deadline at or before ``now`` (its deadline removed), else None."""
        self._drop_stale()
        heap = self._heap
        if not heap or heap[0][0] > now:
            return None
        _, _, key = heapq.heappop(heap)
        del self._live[key]
        return key

    def _is_live(self, entry: tuple[float, int, K]) -> bool:
        current = self._live.get(entry[2])
        return current is not None and current[1] == entry[1]

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap and not self._is_live(heap[0]):
            heapq.heappop(heap)

    def _compact(self) -> None:
        self._heap = [(due, version, key) for key, (due, version) in self._live.items()]
        heapq.heapify(self._heap)
