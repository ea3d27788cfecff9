"""The one window grid: array, stream and store cuts agree for every policy."""
from __future__ import annotations

import numpy as np
import pytest

from samplecnn.windows import WindowGrid


@pytest.mark.parametrize("n", [1, 99, 100, 101, 250, 399, 400, 401, 1000])
@pytest.mark.parametrize("hop", [40, 100, 170])
@pytest.mark.parametrize("last", ["pad", "drop"])
@pytest.mark.parametrize("cap", [None, 2])
def test_stream_cut_equals_starts_on_the_whole_clip(n, hop, last, cap):
    grid = WindowGrid(100, hop, last, cap)
    x = np.arange(1, n + 1, dtype=np.float32)
    rng = np.random.default_rng(n + hop)
    cuts = np.sort(rng.choice(np.arange(1, n), size=min(3, n - 1), replace=False)) if n > 1 else []
    blocks = np.split(x, cuts)
    streamed = list(grid.stream(iter(blocks)))
    starts = grid.starts(n)
    assert [s for s, _ in streamed] == starts.tolist()
    whole = grid.cut(x)
    assert len(whole) == len(starts)
    for (s, w), ref in zip(streamed, whole):
        np.testing.assert_array_equal(w, ref)
        tail = x[s: s + 100]
        np.testing.assert_array_equal(w[: len(tail)], tail)
        assert not np.any(w[len(tail):])


def test_policies_by_hand():
    assert WindowGrid(100, 100, "pad").starts(250).tolist() == [0, 100, 200]
    assert WindowGrid(100, 100, "drop").starts(250).tolist() == [0, 100]
    assert WindowGrid(100, 50, "drop").starts(250).tolist() == [0, 50, 100, 150]
    assert WindowGrid(100, 50, "pad").starts(250).tolist() == [0, 50, 100, 150, 200]
    # A clip shorter than one window always gets exactly one (padded) window.
    for last in ("pad", "drop"):
        assert WindowGrid(100, 100, last).starts(30).tolist() == [0]
        assert WindowGrid(100, 100, last).starts(0).tolist() == []
    assert WindowGrid(100, 100, "pad", max_windows=10).starts(10_000).tolist() == list(range(0, 1000, 100))


def test_bad_grids_are_refused():
    with pytest.raises(ValueError, match="positive"):
        WindowGrid(0, 1)
    with pytest.raises(ValueError, match="policy"):
        WindowGrid(10, 10, "wrap")
    with pytest.raises(ValueError, match="hop"):
        WindowGrid.of_seconds(100, 16000, 1e-6)
