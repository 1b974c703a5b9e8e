"""The paper configs hold the papers' settings (SATN section 4.3) and every
repository config builds every model it can name."""

import pytest
import torch
from fakes import MemoryDataset

from satn.config import ExperimentConfig
from satn.engine import FoldTrainer
from satn.folds import make_folds
from satn.models import available, build_model, uses_transfer
from satn.space import load_space


@pytest.fixture
def satn_cfg(repo_root):
    return ExperimentConfig.from_yaml(repo_root / "experiments" / "paper" / "satn_table2.yaml")


def test_satn_table2_has_the_settings_of_satn_4_3(satn_cfg):
    c = satn_cfg
    assert (c.data.corpus, c.data.protocol, c.data.classes) == ("iemocap", "satn",
                                                                ("neu", "hap", "sad", "ang"))
    assert dict(c.data.label_map) == {"exc": "hap"}
    f = c.features
    assert (f.kind, f.n_mels, f.win_ms, f.hop_ms, f.deltas) == ("logmel", 40, 25.0, 10.0, 2)
    assert (c.train.epochs, c.train.lr, c.train.patience) == (100, 1e-4, None)
    assert c.train.class_weighting == "none"  # plain cross-entropy
    assert c.model.rnn.cell == "lstm" and c.model.rnn.bidirectional
    assert (c.model.rnn.hidden, c.model.rnn.layers) == (128, 1)
    assert c.model.tcn.dilations == (1, 2, 4, 8, 16) and c.model.tcn.convs_per_block == 1
    assert c.model.attention.form == "paper"
    assert c.transfer.p == 2.0 and c.transfer.kind == "both"


def test_satn_table2_scores_the_best_dev_epoch_of_adam_on_test(satn_cfg):
    cfg = satn_cfg.override({"features.n_mels": 4, "train.epochs": 2, "train.device": "cpu",
                             "model.tcn.channels": 8, "train.max_frames": "none"})
    from satn.folddata import prepare_folds

    pf = prepare_folds(MemoryDataset(per_speaker_class=1), cfg, only=[1])[0]
    trainer = FoldTrainer(build_model(cfg.model, (12,), 4), pf.data, cfg.train)
    assert isinstance(trainer.opt, torch.optim.Adam)
    assert trainer.opt.param_groups[0]["lr"] == 1e-4
    assert trainer.loss_fn.weight is None  # no class weighting
    trainer.step()
    trainer.step()
    best = max(trainer.history, key=lambda s: s.dev.ua)
    assert trainer.best.epoch == best.epoch


def test_dev_speaker_both_gives_ten_evaluations_each_speaker_dev_once(satn_cfg):
    meta = MemoryDataset(per_speaker_class=1).meta
    folds = make_folds(meta, satn_cfg.folds)
    assert len(folds) == 10
    speakers = dict(zip(meta["id"], meta["speaker"], strict=True))
    devs = [{speakers[u] for u in f.dev} for f in folds]
    tests = [{speakers[u] for u in f.test} for f in folds]
    assert all(len(d) == 1 and len(t) == 1 for d, t in zip(devs, tests, strict=True))
    assert sorted(s for d in devs for s in d) == sorted(meta["speaker"].unique())
    assert sorted(s for t in tests for s in t) == sorted(meta["speaker"].unique())


def test_the_table2_grid_names_the_eight_variants_and_every_one_builds(satn_cfg):
    space = load_space("satn_table2")
    space.validate(satn_cfg.override({"transfer.teacher": "teacher.pt"}))
    grid = space.params["model.variant"].values
    assert set(grid) == {f"{e}_{r}{t}" for e in ("blstm", "tcn") for r in ("soft", "self")
                         for t in ("", "_at")} and set(grid) <= set(available())
    assert len(grid) == 8 and sum(uses_transfer(v) for v in grid) == 4
    assert space.scheduler.kind == "fifo"
    for v in grid:
        cfg = satn_cfg.override({"model.variant": v})
        model = build_model(cfg.model, (cfg.features.dim,), 4)
        assert model(torch.zeros(1, 5, 120), torch.tensor([5])).logits.shape == (1, 4)


def test_transfer_weight_is_searched_in_satn_tcn():
    space = load_space("satn_tcn")
    w = space.params["transfer.weight"]
    assert w.kind == "loguniform" and w.low > 0
