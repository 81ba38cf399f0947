"""Sliding-window maximum in O(n) with a monotonic deque of indices.

The deque holds indices whose values decrease from front to back. A new value first evicts,
from the back, every index whose value is not greater than it (those can never be a window
maximum again), then goes on the back; the front index is dropped once it falls out of the
window. The front is always the maximum of the current window. Every index is appended once
and removed at most once, so n values cost at most 2n deque operations.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any


def sliding_window_max(values: Sequence[Any], k: int) -> list[Any]:
    """Maxima of every window of `k` consecutive `values`: a list of ``len(values) - k + 1``.

    Values may be of any mutually comparable type. Empty `values` give ``[]``.
    Raises ValueError when `k` < 1, or when `k` > ``len(values)`` for non-empty `values`.
    """
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"window size k must be an integer, not {k!r}")
    if k < 1:
        raise ValueError(f"window size k must be >= 1, got {k}")
    n = len(values)
    if n == 0:
        return []
    if k > n:
        raise ValueError(f"window size k={k} is larger than the {n} values")
    window: deque[int] = deque()
    out: list[Any] = []
    for i in range(n):
        value = values[i]
        while window and values[window[-1]] <= value:
            window.pop()
        window.append(i)
        if window[0] <= i - k:
            window.popleft()
        if i >= k - 1:
            out.append(values[window[0]])
    return out


class SlidingMax:
    """Streaming maximum of the last `k` pushed values.

    ``push(value)`` returns the maximum of the last ``min(k, pushes so far)`` values.
    `operations` counts deque appends and removals (at most twice the number of pushes).
    """

    def __init__(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"window size k must be an integer >= 1, got {k!r}")
        self.k = k
        self._window: deque[tuple[int, Any]] = deque()
        self._count = 0
        self.operations = 0

    def __len__(self) -> int:
        """How many values the current window holds (at most k)."""
        return min(self._count, self.k)

    def push(self, value: Any) -> Any:
        """Add `value` as the newest one and return the maximum of the window."""
        index = self._count
        self._count += 1
        window = self._window
        while window and window[-1][1] <= value:
            window.pop()
            self.operations += 1
        window.append((index, value))
        self.operations += 1
        if window[0][0] <= index - self.k:
            window.popleft()
            self.operations += 1
        return window[0][1]

    @property
    def value(self) -> Any:
        """The current maximum (None before the first push)."""
        return self._window[0][1] if self._window else None

    def reset(self) -> None:
        """Forget every value."""
        self._window.clear()
        self._count = 0
