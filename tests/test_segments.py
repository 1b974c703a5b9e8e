"""Segment front end: the CNN of R_d, per-segment application, per-bin normalisation."""

import numpy as np
import torch

from satn.batching import Normalizer
from satn.models.cnn import SegmentCNN, per_segment

SHAPE = (8, 17)


def _cnn() -> SegmentCNN:
    torch.manual_seed(0)
    return SegmentCNN(SHAPE, channels=(4, 8), kernel_size=3, out_dim=6, dropout=0.0).eval()


def test_cnn_gives_one_vector_per_segment():
    assert _cnn()(torch.randn(5, *SHAPE)).shape == (5, 6)


def test_per_segment_ignores_padding_and_zeroes_it():
    cnn = _cnn()
    x = torch.randn(2, 4, *SHAPE)
    x[1, 2:] = 1e3  # padding garbage
    y = per_segment(cnn, x, torch.tensor([4, 2]), 6)
    assert y.shape == (2, 4, 6) and torch.all(y[1, 2:] == 0)
    torch.testing.assert_close(y[1, :2], cnn(x[1, :2]))
    torch.testing.assert_close(y[0], cnn(x[0]))


def test_segment_normaliser_is_per_frequency_bin():
    rng = np.random.default_rng(0)
    bins = np.arange(SHAPE[1], dtype=np.float64)
    # each bin has its own offset; positions inside a segment carry a trend that a
    # per-position normaliser would wrongly remove
    arrays = [(bins[None, None, :] + np.linspace(-1, 1, SHAPE[0])[None, :, None]
               + rng.normal(size=(n, *SHAPE))).astype(np.float32) for n in (3, 5)]
    norm = Normalizer.fit(arrays)
    assert norm.mean.shape == (SHAPE[1],)
    frames = np.concatenate([a.reshape(-1, SHAPE[1]) for a in arrays])
    np.testing.assert_allclose(norm.mean, frames.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm.std, frames.std(0), rtol=1e-5)
    out = norm(arrays[0])
    assert out.shape == arrays[0].shape
    # the trend across positions survives: first rows stay below last rows
    assert out[:, 0].mean() < out[:, -1].mean() - 0.5
