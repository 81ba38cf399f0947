"""Sliding-window maximum: known answers, brute force, streaming form, O(n) deque use."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facesphere.video import sliding_max as sm
from facesphere.video.sliding_max import SlidingMax, sliding_window_max


def brute_force(values: list, k: int) -> list:
    return [max(values[i : i + k]) for i in range(len(values) - k + 1)]


def test_classic_examples() -> None:
    assert sliding_window_max([1, 3, -1, -3, 5, 3, 6, 7], 3) == [3, 3, 5, 5, 6, 7]
    assert sliding_window_max([1], 1) == [1]
    assert sliding_window_max([4, 2, 12, 3], 1) == [4, 2, 12, 3]
    assert sliding_window_max([4, 2, 12, 3], 4) == [12]
    assert sliding_window_max([9, 8, 7, 6, 5], 2) == [9, 8, 7, 6]
    assert sliding_window_max([2, 2, 2, 1, 2], 2) == [2, 2, 2, 2]


def test_empty_input_gives_empty_list() -> None:
    assert sliding_window_max([], 1) == []
    assert sliding_window_max([], 5) == []


@pytest.mark.parametrize("k", [0, -1, 4])
def test_bad_window_raises(k: int) -> None:
    with pytest.raises(ValueError, match="window size k"):
        sliding_window_max([1, 2, 3], k)


def test_bad_window_type_raises() -> None:
    with pytest.raises(ValueError):
        sliding_window_max([1, 2, 3], 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SlidingMax(0)


def test_against_brute_force_seeded() -> None:
    rng = np.random.default_rng(1234)
    for n in [1, 2, 3, 5, 8, 13, 40, 101]:
        for _ in range(5):
            values = rng.integers(-5, 6, size=n).tolist()  # many ties
            floats = rng.normal(size=n).tolist()
            for k in sorted({1, 2, 3, n // 2 or 1, n - 1 or 1, n}):
                if k > n:
                    continue
                assert sliding_window_max(values, k) == brute_force(values, k)
                assert sliding_window_max(floats, k) == brute_force(floats, k)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(-20, 20), min_size=1, max_size=60), st.data())
def test_against_brute_force_hypothesis(values: list[int], data: st.DataObject) -> None:
    k = data.draw(st.integers(1, len(values)))
    assert sliding_window_max(values, k) == brute_force(values, k)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1, 1, allow_nan=False), min_size=1, max_size=50), st.integers(1, 12))
def test_streaming_matches_batch(values: list[float], k: int) -> None:
    stream = SlidingMax(k)
    pushed = [stream.push(v) for v in values]
    # Once the window is full, the stream equals the batch answer ...
    if k <= len(values):
        assert pushed[k - 1 :] == sliding_window_max(values, k)
    # ... and before that it is the maximum of everything so far.
    for i in range(min(k, len(values))):
        assert pushed[i] == max(values[: i + 1])
    assert stream.value == pushed[-1]
    assert len(stream) == min(k, len(values))


def test_streaming_reset() -> None:
    stream = SlidingMax(3)
    assert stream.value is None
    for v in [5, 1, 1]:
        stream.push(v)
    stream.reset()
    assert stream.value is None and len(stream) == 0
    assert stream.push(2) == 2


class CountingDeque(deque):
    """A deque that counts every append and removal."""

    operations = 0

    def append(self, x: object) -> None:
        CountingDeque.operations += 1
        super().append(x)

    def pop(self) -> object:
        CountingDeque.operations += 1
        return super().pop()

    def popleft(self) -> object:
        CountingDeque.operations += 1
        return super().popleft()


@pytest.mark.parametrize("pattern", ["increasing", "decreasing", "random", "zigzag"])
def test_batch_uses_at_most_2n_deque_operations(
    pattern: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    n, k = 5000, 37
    rng = np.random.default_rng(7)
    values = {
        "increasing": list(range(n)),
        "decreasing": list(range(n, 0, -1)),
        "random": rng.integers(0, 100, size=n).tolist(),
        "zigzag": [(i % 50) * (1 if (i // 50) % 2 else -1) for i in range(n)],
    }[pattern]
    monkeypatch.setattr(sm, "deque", CountingDeque)
    CountingDeque.operations = 0
    result = sliding_window_max(values, k)
    assert CountingDeque.operations > 0, "the batch function must use the module's deque"
    assert CountingDeque.operations <= 2 * n
    assert result == brute_force(values, k)


def test_streaming_uses_at_most_2n_operations() -> None:
    n = 5000
    rng = np.random.default_rng(8)
    for values in (list(range(n)), list(range(n, 0, -1)), rng.normal(size=n).tolist()):
        stream = SlidingMax(25)
        for v in values:
            stream.push(v)
        assert 0 < stream.operations <= 2 * n
        # The deque never holds more than k entries.
        assert len(stream._window) <= 25
