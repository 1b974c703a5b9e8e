"""Engine and runner: learning, best-dev checkpoint selection, observers, determinism."""

import numpy as np
import pytest
import torch
from fakes import MemoryDataset

from satn.config import ExperimentConfig
from satn.engine import class_weights
from satn.folddata import pick_probes
from satn.runner import CrossValidation


def _cfg(**over):
    base = {"model.tcn.channels": 16, "model.attention.heads": 2, "model.tcn.dilations": "1,2",
            "train.epochs": 6, "train.lr": 3e-3, "train.batch_size": 16, "train.device": "cpu",
            "model.dropout": 0.0}
    base.update(over)
    return ExperimentConfig().override(base)


class Recorder:
    def __init__(self):
        self.started, self.epochs, self.final = 0, [], None

    def on_start(self, cv):
        self.started += 1

    def on_epoch(self, cv, epoch, stats, final):
        self.epochs.append((epoch, cv.epoch_summary(stats), set(stats)))
        if final is not None:
            assert self.final is None
            self.final = final


def test_learns_a_learnable_task_on_every_fold():
    torch.set_num_threads(1)
    rec = Recorder()
    result = CrossValidation(_cfg(), MemoryDataset()).run([rec])
    assert len(result.folds) == 5
    assert result.test.ua_mean > 0.7  # chance is 0.25
    assert rec.started == 1 and [e for e, _, _ in rec.epochs] == list(range(1, 7))
    assert rec.final is result


def test_test_is_scored_at_the_best_dev_epoch():
    exp = CrossValidation(_cfg(**{"train.epochs": 4}), MemoryDataset(), folds=[1])
    exp.run()
    trainer = exp.trainers["fold1"]
    dev_uas = [s.dev.ua for s in trainer.history]
    assert trainer.best.epoch == int(np.argmax(dev_uas)) + 1  # the first epoch of the max
    assert trainer.best.dev.ua == max(dev_uas)
    # the kept weights reproduce the kept dev score
    from satn.engine import evaluate

    again = evaluate(trainer.best_model(), trainer.data.dev, 16, torch.device("cpu"))
    assert again.scores.ua == pytest.approx(trainer.best.dev.ua)
    assert set(trainer.best.attention) == set(trainer.data.probe_ids)
    for uid, maps in trainer.best.attention.items():
        t = dict(zip(trainer.data.dev.ids, trainer.data.dev.lengths, strict=True))[uid]
        assert maps.shape == (2, t, t)


def test_same_seed_same_result_and_folds_by_name():
    a = CrossValidation(_cfg(**{"train.epochs": 2}), MemoryDataset(), folds=["fold2"]).run()
    b = CrossValidation(_cfg(**{"train.epochs": 2}), MemoryDataset(), folds=[2]).run()
    assert a.folds[0].name == "fold2" and a.folds[0].test.ua == b.folds[0].test.ua
    assert np.array_equal(a.folds[0].test.confusion, b.folds[0].test.confusion)
    both = CrossValidation(_cfg(**{"train.epochs": 1}), MemoryDataset(), folds=[2, "fold2", 1])
    assert both.fold_names == ["fold2", "fold1"]


def test_patience_stops_a_fold_early():
    exp = CrossValidation(_cfg(**{"train.epochs": 30, "train.patience": 1, "train.lr": 1e-7}),
                     MemoryDataset(per_speaker_class=2), folds=[1])
    exp.run()
    assert exp.trainers["fold1"].epoch < 30


def test_a_fold_trains_the_same_alone_beside_others_and_in_threads():
    # with dropout on: each fold draws its masks from its own generator
    cfg = _cfg(**{"train.epochs": 2, "model.dropout": 0.3})

    def fold2_losses(**kw):
        exp = CrossValidation(cfg, MemoryDataset(), **kw)
        exp.run()
        return [s.train_loss for s in exp.trainers["fold2"].history]

    alone = fold2_losses(folds=[2])
    assert fold2_losses(folds=[1, 2]) == alone
    assert fold2_losses(folds=[1, 2], fold_workers=2) == alone
    assert fold2_losses(folds=[2], fold_workers=1) == alone
    # and the dropout is really on: another seed draws other masks
    other = CrossValidation(cfg.override({"train.seed": 1}), MemoryDataset(), folds=[2])
    other.run()
    assert [s.train_loss for s in other.trainers["fold2"].history] != alone


def test_normaliser_sees_the_training_side_only():
    exp = CrossValidation(_cfg(**{"train.epochs": 1}), MemoryDataset(), folds=[1])
    pf = exp.prepared[0]
    ds = MemoryDataset()
    train_rows = [i for i, u in enumerate(ds.meta["id"]) if u in set(pf.fold.train)]
    frames = np.concatenate(ds.arrays(train_rows))
    assert np.allclose(pf.normalizer.mean, frames.mean(0), atol=1e-4)


def test_class_weights_balance_the_loss():
    w = class_weights([0, 0, 0, 1], 3)
    assert w[2] == 0 and w[1] == pytest.approx(3 * w[0])


def test_probes_are_class_balanced_and_fixed():
    ids = [f"u{i}" for i in range(12)]
    labels = [i % 3 for i in range(12)]
    probes = pick_probes(ids, labels, 3)
    assert sorted(labels[ids.index(p)] for p in probes) == [0, 1, 2]
    assert probes == pick_probes(list(reversed(ids)), list(reversed(labels)), 3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_trains_on_a_gpu_and_padding_still_changes_nothing():
    from satn.engine import evaluate

    exp = CrossValidation(_cfg(**{"train.epochs": 3, "train.device": "cuda",
                             "model.dropout": 0.2}), MemoryDataset(), folds=[1, 2],
                     fold_workers=2)
    result = exp.run()
    assert result.test.ua_mean > 0.5
    trainer = exp.trainers["fold1"]
    assert next(trainer.model.parameters()).is_cuda
    # batched (padded) and one-by-one evaluation agree up to TF32/cuDNN rounding
    model, dev = trainer.best_model(), trainer.data.dev
    batched = evaluate(model, dev, 16, torch.device("cuda")).scores
    single = evaluate(model, dev, 1, torch.device("cuda")).scores
    assert batched.ua == single.ua and np.array_equal(batched.confusion, single.confusion)


def test_device_names_resolve_or_say_what_is_wrong():
    from satn.config import ConfigError
    from satn.devices import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="'cuda:1' requested but CUDA is not available"):
            resolve_device("cuda:1")


def test_deterministic_training_switches_the_process_to_deterministic_kernels():
    """It changes process-wide torch state, so it runs in a process of its own."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import os, torch
        from satn.config import TrainConfig
        from satn.engine import use_deterministic
        before = torch.are_deterministic_algorithms_enabled()
        use_deterministic(TrainConfig(deterministic=True).deterministic)
        print(before, torch.are_deterministic_algorithms_enabled(),
              torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
              os.environ["CUBLAS_WORKSPACE_CONFIG"])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "False", "False", ":4096:8"]


def test_pooled_attention_maps_stay_distributions():
    import torch

    from satn.engine import pool_attention

    att = torch.rand(2, 37, 37).softmax(-1)
    pooled = pool_attention(att, 10)
    assert pooled.shape == (2, 10, 10)
    assert torch.allclose(pooled.sum(-1), torch.ones(2, 10), atol=1e-5)
    soft = torch.rand(37).softmax(-1)
    assert torch.allclose(pool_attention(soft, 10).sum(), torch.tensor(1.0), atol=1e-6)
    same = pool_attention(att, 37)  # one frame per bin: unchanged
    assert torch.allclose(same, att, atol=1e-6)
