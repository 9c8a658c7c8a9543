"""Tests for rnnkit.data.batching: stream batching for truncated BPTT, padding, windows."""

import pytest
import torch

from rnnkit.data.batching import StreamBatches, batchify, pad_sequences, sliding_windows
from rnnkit.errors import DataError


def test_batchify_layout_drops_remainder():
    ids = torch.arange(26)
    data = batchify(ids, 4)
    assert data.shape == (4, 6)
    for b in range(4):
        assert torch.equal(data[b], ids[b * 6 : (b + 1) * 6])
    with pytest.raises(DataError):
        batchify(torch.arange(3), 4)


@pytest.mark.parametrize("n, batch_size, bptt", [(26, 4, 2), (1000, 7, 10), (101, 1, 100)])
def test_windows_cover_each_stream_exactly_once(n, batch_size, bptt):
    ids = torch.arange(n)
    batches = StreamBatches(ids, batch_size, bptt)
    streams = batchify(ids, batch_size)
    windows = list(batches)
    assert len(windows) == len(batches) == batches.num_windows
    inputs = torch.cat([x for x, _ in windows], dim=1)
    # every input position once, in order, then the final target closes the stream
    rebuilt = torch.cat([inputs, windows[-1][1][:, -1:]], dim=1)
    assert torch.equal(rebuilt, streams)
    for x, y in windows:
        assert x.shape == y.shape and x.shape[0] == batch_size and x.shape[1] <= bptt
        assert torch.equal(y[:, :-1], x[:, 1:])  # targets are inputs shifted by one
    for (_, y0), (x1, _) in zip(windows, windows[1:], strict=False):
        assert torch.equal(y0[:, -1], x1[:, 0])  # streams continue across windows
    assert batches.num_tokens == sum(y.numel() for _, y in windows)


def test_last_short_window_kept_or_dropped():
    ids = torch.arange(26)  # L = 6: 5 input positions, bptt 2 -> windows of 2, 2, 1
    kept = StreamBatches(ids, 4, 2)
    assert [x.shape[1] for x, _ in kept] == [2, 2, 1]
    assert torch.equal(kept.window(2)[0][:, 0], torch.tensor([4, 10, 16, 22]))
    assert torch.equal(kept.window(-1)[1][:, 0], torch.tensor([5, 11, 17, 23]))
    dropped = StreamBatches(ids, 4, 2, drop_last=True)
    assert [x.shape[1] for x, _ in dropped] == [2, 2]
    assert len(dropped) == 2 and dropped.num_tokens == 16
    with pytest.raises(IndexError):
        kept.window(3)


def test_too_short_is_a_data_error():
    with pytest.raises(DataError) as info:
        StreamBatches(torch.arange(10), 4, 5)
    message = str(info.value)
    assert "10 tokens" in message and "batch_size 4" in message and "bptt 5" in message
    assert "at least 24" in message
    StreamBatches(torch.arange(24), 4, 5)  # exactly one window fits


def test_start_resumes_mid_epoch():
    ids = torch.arange(1000)
    full = list(StreamBatches(ids, 5, 7))
    resumed = StreamBatches(ids, 5, 7, start=10)
    assert len(resumed) == len(full) - 10
    rest = list(resumed)
    assert len(rest) == len(full) - 10
    for (a, b), (c, d) in zip(rest, full[10:], strict=True):
        assert torch.equal(a, c) and torch.equal(b, d)
    assert resumed.num_tokens == sum(y.numel() for _, y in full[10:])
    assert list(StreamBatches(ids, 5, 7, start=len(full))) == []
    with pytest.raises(ValueError):
        StreamBatches(ids, 5, 7, start=len(full) + 1)


def test_pad_sequences():
    padded, lengths = pad_sequences([[1, 2, 3], torch.tensor([4]), []], pad_value=-1)
    assert padded.tolist() == [[1, 2, 3], [4, -1, -1], [-1, -1, -1]]
    assert lengths.tolist() == [3, 1, 0] and lengths.dtype == torch.int64
    feats = [torch.ones(2, 3), torch.zeros(4, 3)]
    padded, lengths = pad_sequences(feats, batch_first=False)
    assert padded.shape == (4, 2, 3) and lengths.tolist() == [2, 4]
    assert padded[:2, 0].eq(1).all() and padded[2:, 0].eq(0).all()
    with pytest.raises(ValueError):
        pad_sequences([torch.ones(2, 3), torch.ones(2, 4)])


def test_sliding_windows_shapes_and_no_leakage():
    x = torch.arange(20.0)
    inputs, targets = sliding_windows(x, window=5)
    assert inputs.shape == (15, 5) and targets.shape == (15, 1)
    for i in range(15):
        assert torch.equal(inputs[i], x[i : i + 5])
        assert targets[i, 0] == x[i + 5]
    series = torch.arange(40.0).view(20, 2)
    inputs, targets = sliding_windows(series, window=4, horizon=3, stride=2)
    assert inputs.shape == (7, 4, 2) and targets.shape == (7, 3, 2)
    assert torch.equal(targets[3], series[3 * 2 + 4 : 3 * 2 + 7])
    with pytest.raises(DataError, match="too short"):
        sliding_windows(torch.arange(5.0), window=5)
