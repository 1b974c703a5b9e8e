"""TACN's figures: per-utterance representations on a test side, t-SNE, confusion grid."""

import numpy as np
import pytest
import torch

from satn.batching import SequenceDataset
from satn.config import ExperimentConfig
from satn.models import build_model
from satn.plots import confusion_grid_png, scatter_panels_png
from satn.representations import run_side, tsne_2d

SHAPE = (8, 17)
TINY = {"model.cnn.channels": "4", "model.cnn.out_dim": 6, "model.tcn.channels": 4,
        "model.tcn.dilations": "1", "model.vqvae.hidden": 4, "model.vqvae.code_dim": 2,
        "model.vqvae.codebook_size": 4, "model.fusion.dim": 5}


def _data(n=12):
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(int(rng.integers(1, 4)), *SHAPE)).astype(np.float32)
              for _ in range(n)]
    return SequenceDataset(arrays, [i % 3 for i in range(n)], [f"u{i}" for i in range(n)])


@pytest.mark.parametrize("variant,names", [("deep_tcn", {"R_d"}),
                                           ("fusion_tcn", {"R_l", "R_d", "R_f"})])
def test_test_side_gives_one_point_per_utterance(variant, names):
    torch.manual_seed(0)
    model = build_model(ExperimentConfig().override({**TINY, "model.variant": variant}).model,
                        SHAPE, 3)
    data = _data()
    side = run_side(model, data, 3, batch_size=5)
    assert set(side.representations) == names
    assert side.representations["R_d"].shape == (12, 6)
    assert side.scores.confusion.sum() == 12 and sorted(side.ids) == sorted(data.ids)
    # a point is the mean over the utterance's real segments, whatever its batch
    i = side.ids.index("u3")
    x = torch.from_numpy(data.arrays[3])[None]
    alone = model.encoder.front.represent(x, torch.tensor([x.shape[1]]))["R_d"][0].mean(0)
    np.testing.assert_allclose(side.representations["R_d"][i], alone.detach().numpy(), atol=1e-5)


def test_tsne_keeps_separated_clusters_apart_and_is_seeded():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 1, (20, 10)), rng.normal(12, 1, (20, 10))])
    a, b = tsne_2d(x, seed=3), tsne_2d(x, seed=3)
    np.testing.assert_allclose(a, b)
    gap = np.linalg.norm(a[:20].mean(0) - a[20:].mean(0))
    spread = max(a[:20].std(0).max(), a[20:].std(0).max())
    assert gap > 3 * spread
    with pytest.raises(ValueError, match="at least 3"):
        tsne_2d(x[:2])


def test_figures_are_written(tmp_path):
    pts = np.random.default_rng(2).normal(size=(9, 2))
    y = np.arange(9) % 3
    assert scatter_panels_png({"R_d": (pts, y), "R_f": (pts, y)}, ("a", "b", "c"),
                              tmp_path / "t.png").stat().st_size > 0
    cms = {k: np.eye(3) * 4 + 1 for k in ("deep_tcn", "fusion_tcn", "deep_tacn", "fusion_tacn")}
    assert confusion_grid_png(cms, ("a", "b", "c"), tmp_path / "c.png").stat().st_size > 0
