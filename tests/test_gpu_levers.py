"""The GPU levers of ``train.*``: bf16 autocast, torch.compile, device-resident features.

All are off by default and testable on CPU: bf16 autocast runs there too, compile
is checked against eager (the real inductor build is slow on CPU, so that test is
marked slow; the wiring is checked with dynamo's eager backend), and resident
features must give the host path's batches and results exactly.
"""

import numpy as np
import pytest
import torch
from fakes import MemoryDataset

from satn.batching import Normalizer, SequenceDataset, make_loader, set_epoch
from satn.config import ConfigError, ExperimentConfig, TrainConfig
from satn.engine import evaluate
from satn.models import build_model
from satn.resident import ResidentFeatures, ResidentLoader
from satn.runner import CrossValidation


def _cfg(**over):
    base = {"model.tcn.channels": 16, "model.attention.heads": 2, "model.tcn.dilations": "1,2",
            "train.epochs": 2, "train.lr": 3e-3, "train.batch_size": 8, "train.device": "cpu",
            "model.dropout": 0.1}
    base.update(over)
    return ExperimentConfig().override(base)


@pytest.mark.parametrize("key,value", [("precision", "fp16"), ("compile", "yes"),
                                       ("resident", 1)])
def test_each_lever_is_checked_with_one_line_naming_it(key, value):
    with pytest.raises(ConfigError, match=rf"^train\.{key} must be") as e:
        TrainConfig(**{key: value})
    assert "\n" not in str(e.value)
    default = TrainConfig()
    assert (default.precision, default.compile, default.resident) == ("fp32", False, False)


def _run(folds=(1,), **over):
    torch.set_num_threads(1)
    exp = CrossValidation(_cfg(**over), MemoryDataset(per_speaker_class=3), folds=list(folds))
    exp.run()
    return exp


@pytest.mark.parametrize("variant", ["tcn_self", "blstm_soft"])
def test_bf16_trains_to_finite_losses_close_to_fp32(variant):
    plain = _run(**{"model.variant": variant}).trainers["fold1"]
    half = _run(**{"model.variant": variant, "train.precision": "bf16"}).trainers["fold1"]
    for a, b in zip(plain.history, half.history, strict=True):
        assert np.isfinite(b.train_loss) and np.isfinite(b.dev_loss)
        assert b.train_loss == pytest.approx(a.train_loss, rel=0.05)
    # the same weights scored both ways: bf16 rounds (it differs) but predicts alike
    model, dev = plain.best_model(), plain.data.dev
    fp32 = evaluate(model, dev, 8, torch.device("cpu"))
    bf16 = evaluate(model, dev, 8, torch.device("cpu"), precision="bf16")
    assert bf16.probs.shape == fp32.probs.shape and bf16.probs.dtype == np.float32
    assert not np.array_equal(bf16.probs, fp32.probs)
    assert np.abs(bf16.probs - fp32.probs).max() < 0.05
    assert (bf16.probs.argmax(1) == fp32.probs.argmax(1)).mean() >= 0.9


def test_bf16_runs_the_forward_in_bf16_and_keeps_weights_fp32(monkeypatch):
    seen = []
    from satn.models.classifier import SERModel

    real = SERModel.forward

    def spy(self, x, lengths, return_maps=False):
        out = real(self, x, lengths, return_maps)
        seen.append(out.logits.dtype)
        return out

    monkeypatch.setattr(SERModel, "forward", spy)
    trainer = _run(**{"train.precision": "bf16", "train.epochs": 1}).trainers["fold1"]
    assert seen and set(seen[:-len(trainer.data.probe_ids)]) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())


def _compile_with(monkeypatch, backend):
    """torch.compile as the engine calls it, with ``backend`` (and a record of the calls)."""
    calls, real = [], torch.compile

    def compile_(model, **kw):
        calls.append(model)
        return real(model, backend=backend, **kw)

    monkeypatch.setattr(torch, "compile", compile_)
    return calls


def test_a_compiled_trainer_trains_through_the_wrapper_and_saves_plain_keys(monkeypatch):
    calls = _compile_with(monkeypatch, "eager")  # dynamo's tracing without code generation
    exp = _run(**{"train.compile": True, "train.epochs": 1, "model.dropout": 0.0})
    trainer = exp.trainers["fold1"]
    assert calls == [trainer.model] and trainer.train_model is not trainer.model
    plain = _run(**{"train.epochs": 1, "model.dropout": 0.0}).trainers["fold1"]
    assert trainer.history[0].train_loss == pytest.approx(plain.history[0].train_loss, rel=1e-5)
    state = trainer.state()["model"]
    fresh = build_model(exp.cfg.model, (12,), 4)
    assert set(state) == set(fresh.state_dict()) == set(trainer.best.state_dict)
    fresh.load_state_dict(state)  # strict: the checkpoint loads into a plain model
    x, lengths = torch.randn(2, 30, 12), torch.tensor([30, 17])
    assert torch.equal(fresh.eval()(x, lengths).logits, trainer.model.eval()(x, lengths).logits)


@pytest.mark.parametrize("over,crop", [({"train.max_frames": 64}, 64),
                                       ({"train.max_frames": 16, "recipe.chunk_frames": 64}, 64)])
def test_compiled_training_sees_one_batch_length(monkeypatch, over, crop):
    """Every compiled training batch is padded to the training crop: one shape to compile."""
    _compile_with(monkeypatch, "eager")
    exp = CrossValidation(_cfg(**{"train.compile": True, "train.epochs": 1, **over}),
                     MemoryDataset(per_speaker_class=2), folds=[1])
    trainer = exp.trainers["fold1"]
    seen, real = set(), trainer.train_model

    def spy(x, lengths, **kw):
        seen.add(x.shape[1])
        assert int(lengths.max()) < crop  # the demo's utterances are 20-59 frames: padded
        return real(x, lengths, **kw)

    trainer.train_model = spy
    trainer.step()
    assert seen == {crop}


def test_compiled_training_traces_one_graph_with_dropout_on(monkeypatch):
    """The fold's dropout generator would break the graph at every dropout; compiled
    training draws from torch's RNG instead, so the training forward is one graph."""
    _compile_with(monkeypatch, "eager")
    exp = CrossValidation(_cfg(**{"train.compile": True, "model.dropout": 0.3}),
                     MemoryDataset(per_speaker_class=1), folds=[1])
    model = exp.trainers["fold1"].model.train()
    x, lengths = torch.randn(2, 30, 12), torch.tensor([30, 17])
    assert torch._dynamo.explain(model)(x, lengths).graph_break_count == 0
    eager = CrossValidation(_cfg(**{"model.dropout": 0.3}), MemoryDataset(per_speaker_class=1),
                       folds=[1]).trainers["fold1"].model.train()
    assert torch._dynamo.explain(eager)(x, lengths).graph_break_count > 0


@pytest.mark.slow
def test_inductor_compiled_model_gives_eager_logits_and_gradients():
    torch.manual_seed(0)
    cfg = _cfg(**{"model.dropout": 0.0}).model
    model = build_model(cfg, (12,), 4)
    compiled = torch.compile(model)
    x, lengths = torch.randn(4, 40, 12), torch.tensor([40, 33, 20, 7])
    for train in (True, False):
        model.train(train)
        a, b = model(x, lengths).logits, compiled(x, lengths).logits
        assert torch.allclose(a, b, atol=1e-5)
    model.train()
    ga = torch.autograd.grad(model(x, lengths).logits.sum(), model.head[1].weight)[0]
    gb = torch.autograd.grad(compiled(x, lengths).logits.sum(), model.head[1].weight)[0]
    assert torch.allclose(ga, gb, atol=1e-5)


def _dataset(max_frames=None):
    rng = np.random.default_rng(0)
    arrays = [rng.normal(3.0, 2.0, (int(n), 5)).astype(np.float32)
              for n in rng.integers(5, 40, 23)]
    return SequenceDataset(arrays, rng.integers(0, 4, 23), [f"u{i}" for i in range(23)],
                           Normalizer.fit(arrays), max_frames=max_frames, seed=7)


@pytest.mark.parametrize("shuffle,max_frames,max_cost", [(True, 16, None), (False, None, 3000)])
def test_resident_batches_equal_the_host_loaders(shuffle, max_frames, max_cost):
    ds = _dataset(max_frames)
    host = make_loader(ds, 4, shuffle=shuffle, seed=3, bucket_width=10, max_cost=max_cost)
    resident = ResidentLoader(ResidentFeatures(ds, torch.device("cpu")), 4, shuffle=shuffle,
                              seed=3, bucket_width=10, max_cost=max_cost)
    assert len(resident) == len(host)
    for epoch in (1, 2):  # new crops and order each epoch, the same on both paths
        set_epoch(host, epoch)
        set_epoch(resident, epoch)
        pairs = list(zip(host, resident, strict=True))
        for a, b in pairs:
            assert a.ids == b.ids and torch.equal(a.lengths, b.lengths)
            assert torch.equal(a.y, b.y) and torch.equal(a.x, b.x)
        if max_frames:
            assert max(int(b.lengths.max()) for _, b in pairs) == max_frames


def test_a_resident_fold_trains_exactly_as_a_host_fed_one():
    a = _run(**{"train.resident": True}).trainers["fold1"]
    b = _run().trainers["fold1"]
    assert isinstance(a.loader, ResidentLoader) and not isinstance(b.loader, ResidentLoader)
    assert [s.train_loss for s in a.history] == [s.train_loss for s in b.history]
    assert [s.dev_loss for s in a.history] == [s.dev_loss for s in b.history]
    assert a.best.test.ua == b.best.test.ua
    assert np.array_equal(a.best.test.confusion, b.best.test.confusion)
    assert all(torch.equal(v, b.best.state_dict[k]) for k, v in a.best.state_dict.items())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_levers_on_a_gpu_keep_features_there_and_train_alike():
    from satn.models.attention import MultiHeadSelfAttention

    attn = MultiHeadSelfAttention(32, 4).cuda().eval()
    x = torch.randn(3, 70, 32, device="cuda")
    lengths = torch.tensor([70, 41, 9], device="cuda")
    assert torch.allclose(attn(x, lengths)[0], attn(x, lengths, weights=True)[0], atol=1e-3)
    cuda = {"train.device": "cuda", "train.epochs": 3}
    plain = _run(**cuda).trainers["fold1"]
    fast = _run(**cuda, **{"train.resident": True, "train.precision": "bf16"}).trainers["fold1"]
    assert fast.loader.features.frames.is_cuda
    assert next(iter(fast.loader)).x.is_cuda  # cut on the device: no host copy per batch
    assert all(np.isfinite(s.train_loss) for s in fast.history)
    assert fast.history[-1].train_loss == pytest.approx(plain.history[-1].train_loss, rel=0.1)
