"""The one set of scoring options: every value validated once, at construction."""
import math

import pytest

from samplecnn.inference.runners import BACKENDS
from samplecnn.metrics import AGGREGATIONS
from samplecnn.options import MAX_HOP_S, ScoringOptions, check_float
from samplecnn.windows import LAST_WINDOW_POLICIES


@pytest.mark.parametrize("hop", [math.inf, -math.inf, math.nan, 1e308, 0.0, -1.0, "0.5", True])
def test_a_bad_hop_is_one_line_naming_the_option(hop):
    with pytest.raises(ValueError, match="hop") as err:
        ScoringOptions(hop=hop)
    assert "\n" not in str(err.value)


def test_the_grid_follows_the_options():
    opts = ScoringOptions(hop=0.5, last="drop", max_windows=3)
    grid = opts.grid(window=1000, sample_rate=2000)
    assert (grid.window, grid.hop, grid.last, grid.max_windows) == (1000, 1000, "drop", 3)
    assert list(grid.starts(10_000)) == [0, 1000, 2000]
    assert ScoringOptions().grid(1000, 2000).hop == 1000  # no hop: one window
    assert opts.hop_s(1000, 2000) == 0.5


def test_choices_come_from_where_each_concept_lives():
    for last in LAST_WINDOW_POLICIES:
        assert ScoringOptions(last=last).last == last
    for how in AGGREGATIONS:
        assert ScoringOptions(aggregate=how).aggregate == how
    for backend in BACKENDS:
        assert ScoringOptions(backend=backend).backend == backend
    assert ScoringOptions(backend="onnx").backend == "onnxruntime"
    for field, bad in [("last", "wrap"), ("aggregate", "median"), ("backend", "tpu"),
                       ("top_k", -1), ("top_k", 2.5), ("max_windows", 0)]:
        with pytest.raises(ValueError):
            ScoringOptions(**{field: bad})


def test_replace_validates_again_and_to_dict_round_trips():
    opts = ScoringOptions(hop=1.0)
    with pytest.raises(ValueError, match="hop"):
        opts.replace(hop=math.nan)
    assert ScoringOptions(**opts.to_dict()) == opts
    assert ScoringOptions(hop=MAX_HOP_S).hop == MAX_HOP_S


def test_check_float_bounds():
    assert check_float(2, "x", low=0) == 2.0
    assert check_float(0, "x", low=0, low_inclusive=True) == 0.0
    with pytest.raises(ValueError, match="x must be more than 0"):
        check_float(0, "x", low=0)
    with pytest.raises(ValueError, match="at most 5"):
        check_float(6, "x", high=5)
