"""Self-attention's two paths: the fused kernel when no map is asked for, the explicit
softmax map when one is (probe utterances, attention transfer)."""

import numpy as np
import pytest
import torch
from fakes import MemoryDataset

from satn.batching import SequenceDataset, collate
from satn.config import AttentionSettings, ExperimentConfig, ModelConfig, TCNSettings
from satn.engine import evaluate, loss_terms
from satn.models import build_model
from satn.models.attention import MultiHeadSelfAttention
from satn.models.masking import length_mask
from satn.runner import CrossValidation

LENGTHS = [37, 90, 12, 64]


def _batch(lengths, dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    x = torch.randn(len(lengths), int(lengths.max()), dim, generator=g)
    return x * length_mask(lengths, x.shape[1])[..., None], lengths


@pytest.mark.parametrize("heads,out_proj", [(1, False), (4, True)])
def test_fused_and_explicit_paths_agree_on_padded_batches(heads, out_proj):
    torch.manual_seed(0)
    attn = MultiHeadSelfAttention(16, heads, out_proj=out_proj).eval()
    x, lengths = _batch(LENGTHS, 16)
    fast, none = attn(x, lengths)
    slow, maps = attn(x, lengths, weights=True)
    assert none is None and maps.shape == (4, heads, 90, 90)
    assert torch.allclose(fast, slow, atol=1e-5)
    # gradients agree too: training on the fused path learns what the explicit one would
    g_fast = torch.autograd.grad(fast.square().sum(), attn.qkv.weight)[0]
    g_slow = torch.autograd.grad(slow.square().sum(), attn.qkv.weight)[0]
    assert torch.allclose(g_fast, g_slow, rtol=1e-4, atol=1e-4)


def test_fused_path_never_reads_padding():
    torch.manual_seed(0)
    attn = MultiHeadSelfAttention(16, 4).eval()
    x, lengths = _batch(LENGTHS, 16)
    noisy = x.clone()
    for i, n in enumerate(lengths.tolist()):
        noisy[i, n:] = 1e3  # garbage, not zeros
    y, _ = attn(x, lengths)
    y_noisy, _ = attn(noisy, lengths)
    for i, n in enumerate(lengths.tolist()):
        alone, _ = attn(x[i:i + 1, :n], lengths[i:i + 1])
        assert torch.allclose(y[i, :n], alone[0], atol=1e-5)
        assert torch.allclose(y_noisy[i, :n], y[i, :n], atol=1e-5)


def _model(variant, form):
    return build_model(ModelConfig(variant, tcn=TCNSettings(16, dilations=(1, 2)),
                                   attention=AttentionSettings(heads=4, form=form), dropout=0.0),
                       (12,), 4).eval()


@pytest.mark.parametrize("variant,form", [("tcn_self", "multihead"), ("tcn_self", "paper"),
                                          ("blstm_self", "multihead"), ("tcn_self_at", "paper")])
def test_a_model_predicts_the_same_with_and_without_maps(variant, form):
    torch.manual_seed(0)
    model = _model(variant, form)
    x, lengths = _batch(LENGTHS, 12)
    plain = model(x, lengths)
    mapped = model(x, lengths, return_maps=True)
    assert plain.attention is None and "attention" not in plain.maps
    assert torch.allclose(plain.logits, mapped.logits, atol=1e-5)
    heads = 1 if form == "paper" else 4
    assert mapped.maps["attention"].shape == (4, heads, 90, 90)


def test_soft_attention_keeps_its_cheap_weights_without_being_asked():
    model = _model("tcn_soft", "multihead")
    x, lengths = _batch(LENGTHS, 12)
    att = model(x, lengths).attention
    assert att.shape == (4, 90)
    assert torch.allclose(att.sum(-1), torch.ones(4))


class Spy:
    """Records every self-attention call: whether it built weights, and inside which phase."""

    def __init__(self, monkeypatch):
        self.calls, self.phase = [], "train"
        real = MultiHeadSelfAttention.forward

        def forward(module, x, lengths, weights=False):
            y, attn = real(module, x, lengths, weights)
            self.calls.append((self.phase, weights, None if attn is None else tuple(attn.shape)))
            return y, attn

        monkeypatch.setattr(MultiHeadSelfAttention, "forward", forward)

    def during(self, phase, fn):
        def wrapped(*a, **kw):
            before, self.phase = self.phase, phase
            try:
                return fn(*a, **kw)
            finally:
                self.phase = before
        return wrapped


def test_training_and_evaluation_build_no_map_and_probes_do(monkeypatch):
    import satn.engine as engine

    torch.set_num_threads(1)
    spy = Spy(monkeypatch)
    monkeypatch.setattr(engine, "evaluate", spy.during("evaluate", engine.evaluate))
    monkeypatch.setattr(engine, "attention_maps", spy.during("probe", engine.attention_maps))
    cfg = ExperimentConfig().override({
        "model.tcn.channels": 16, "model.attention.heads": 2, "model.tcn.dilations": "1,2",
        "train.epochs": 1, "train.batch_size": 16, "train.device": "cpu"})
    exp = CrossValidation(cfg, MemoryDataset(per_speaker_class=2), folds=[1])
    exp.run()
    by_phase = {p: [c for c in spy.calls if c[0] == p] for p in ("train", "evaluate", "probe")}
    assert all(by_phase.values())
    for phase in ("train", "evaluate"):
        assert all(not w and shape is None for _, w, shape in by_phase[phase])
    assert all(w and shape[0] == 1 for _, w, shape in by_phase["probe"])
    best = exp.trainers["fold1"].best
    assert set(best.attention) == set(exp.prepared[0].data.probe_ids)
    for m in best.attention.values():  # (H, T, T), each row a distribution
        assert m.shape[0] == 2 and m.shape[1] == m.shape[2]
        assert np.allclose(m.astype(np.float32).sum(-1), 1.0, atol=1e-2)  # stored as float16


class MapTerm:
    """An auxiliary loss that only records what maps it was given."""

    name, weight = "spy", 0.0

    def __init__(self, needs_maps):
        self.needs_maps, self.seen = needs_maps, []

    def __call__(self, maps, x, lengths, keys):
        self.seen.append(dict(maps))
        return torch.zeros(())


@pytest.mark.parametrize("needs", [True, False])
def test_a_transfer_term_gets_maps_only_when_it_needs_them(needs):
    torch.manual_seed(0)
    model = _model("tcn_self_at", "multihead")
    arrays = [np.random.default_rng(i).normal(size=(n, 12)).astype(np.float32) for i, n in
              enumerate(LENGTHS)]
    ds = SequenceDataset(arrays, [0, 1, 2, 3], ["a", "b", "c", "d"])
    batch = collate([ds[i] for i in range(4)])
    term = MapTerm(needs)
    loss_terms(model, batch, ds, torch.nn.CrossEntropyLoss(), [term])
    maps = term.seen[0]
    if not needs:
        assert maps == {}
        return
    att = maps["attention"]  # (B, H, T, T): rows over real keys sum to one, none on padding
    assert att.shape == (4, 4, 90, 90)
    assert torch.allclose(att.sum(-1), torch.ones(4, 4, 90), atol=1e-5)
    keys = length_mask(batch.lengths, 90)[:, None, None, :]
    assert att.masked_select(~keys.expand_as(att)).abs().max() == 0
    # evaluation with such a term asks for the maps as well (the dev loss has the term)
    term.seen.clear()
    evaluate(model, ds, 4, torch.device("cpu"), aux=[term])
    assert term.seen and all("attention" in m for m in term.seen)
