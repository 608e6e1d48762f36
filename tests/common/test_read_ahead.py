"""The read-ahead thread of extract, and the one scaler a run of frames shares."""

from __future__ import annotations

import threading

import av
import numpy as np
import pytest
from av.video.reformatter import VideoReformatter

from pipeline.common import media
from pipeline.common.read_ahead import read_ahead


def test_items_arrive_in_order_from_another_thread():
    seen_threads: set[int] = set()

    def produce():
        for k in range(100):
            seen_threads.add(threading.get_ident())
            yield k

    assert list(read_ahead(produce, depth=3)) == list(range(100))
    assert seen_threads and threading.get_ident() not in seen_threads


def test_a_producer_error_is_raised_where_its_item_would_have_come():
    def produce():
        yield 1
        yield 2
        raise ValueError("damaged packet at frame 3")

    items = read_ahead(produce, depth=8)
    assert next(items) == 1 and next(items) == 2
    with pytest.raises(ValueError, match="damaged packet at frame 3"):
        next(items)


def test_stopping_early_closes_the_producer_in_its_own_thread():
    closed_in: list[int] = []
    produced: list[int] = []

    def produce():
        try:
            for k in range(10_000):
                produced.append(k)
                yield k
        finally:
            closed_in.append(threading.get_ident())

    items = read_ahead(produce, depth=4)
    assert [next(items) for _ in range(5)] == [0, 1, 2, 3, 4]
    items.close()
    assert len(closed_in) == 1 and closed_in[0] != threading.get_ident()
    assert len(produced) <= 5 + 4 + 1  # stopped within its read-ahead depth, not run to the end


def _frame(width: int, height: int, seed: int) -> av.VideoFrame:
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")


@pytest.mark.parametrize("out_wh", [(64, 48), (63, 47)])  # even: the 4:2:0 route; odd: the RGB route
def test_a_shared_scaler_gives_what_a_fresh_one_gives_even_when_the_input_size_changes(out_wh):
    frames = [_frame(320, 240, 0), _frame(320, 240, 1), _frame(200, 150, 2), _frame(320, 240, 3)]
    shared = VideoReformatter()
    for frame in frames:
        got = media.resize_to_rgb(frame, *out_wh, shared)
        expected = media.resize_to_rgb(frame, *out_wh)
        assert got.shape == (out_wh[1], out_wh[0], 3) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, expected)
    # and the result is an area average: a flat frame stays flat at its own value
    flat = av.VideoFrame.from_ndarray(np.full((240, 320, 3), 128, np.uint8), format="rgb24").reformat(format="yuv420p")
    assert np.abs(media.resize_to_rgb(flat, *out_wh, shared).astype(int) - 128).max() <= 2
