"""Model blocks and variants: shapes, padding invariance, causality, registry."""

import pytest
import torch

from satn.config import (
    AttentionSettings,
    ConfigError,
    ModelConfig,
    RecurrentSettings,
    TCNSettings,
)
from satn.models import available, build_model, families, uses_transfer
from satn.models.attention import MultiHeadSelfAttention, SoftAttention
from satn.models.dropout import Dropout, use_generator
from satn.models.masking import length_mask, masked_mean
from satn.models.recurrent import RecurrentEncoder
from satn.models.tcn import TCN


def _mc(variant="tcn_self", heads=4, channels=64, dilations=(1, 2, 4, 8, 16), causal=True,
        **kw) -> ModelConfig:
    return ModelConfig(variant, tcn=TCNSettings(channels, dilations=dilations, causal=causal),
                       attention=AttentionSettings(heads=heads), **kw)


def _batch(lengths, dim=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = max(lengths)
    x = torch.randn(len(lengths), t, dim, generator=g)
    lengths = torch.tensor(lengths)
    x = x * length_mask(lengths, t).unsqueeze(-1)  # zero padding, as collate gives
    return x, lengths


@pytest.mark.parametrize("causal", [True, False])
def test_padding_never_changes_a_prediction(causal):
    torch.manual_seed(0)
    model = build_model(_mc(causal=causal, heads=4, channels=32), (120,), 4).eval()
    x, lengths = _batch([90, 37, 12])
    batched = model(x, lengths, return_maps=True)
    for i, n in enumerate(lengths.tolist()):
        alone = model(x[i:i + 1, :n], lengths[i:i + 1], return_maps=True)
        assert torch.allclose(batched.logits[i], alone.logits[0], atol=1e-5)
        # attention of real frames is the same too, and no weight falls on padding
        assert torch.allclose(batched.attention[i, :, :n, :n], alone.attention[0], atol=1e-5)
        assert batched.attention[i, :, :n, n:].abs().sum() == 0


def test_padding_content_is_ignored():
    """Garbage in the padded region (not zeros) must not leak into real frames either."""
    torch.manual_seed(0)
    model = build_model(_mc(causal=False, channels=32), (120,), 4).eval()
    x, lengths = _batch([50, 20])
    noisy = x.clone()
    noisy[1, 20:] = 1e3
    assert torch.allclose(model(x, lengths).logits, model(noisy, lengths).logits, atol=1e-5)


@pytest.mark.parametrize("convs", [1, 2])
def test_causal_tcn_output_depends_only_on_the_past(convs):
    torch.manual_seed(0)
    tcn = TCN(8, 16, (1, 2, 4), causal=True, convs_per_block=convs).eval()
    x, lengths = _batch([40], dim=8)
    y = tcn(x, lengths)
    x2 = x.clone()
    x2[0, 25:] += 5.0  # change the future only
    y2 = tcn(x2, lengths)
    assert torch.allclose(y[0, :25], y2[0, :25], atol=1e-6)
    assert not torch.allclose(y[0, 25:], y2[0, 25:])


def test_receptive_field_matches_dilations():
    tcn = TCN(4, 8, (1, 2, 4, 8, 16), kernel_size=3)
    assert tcn.receptive_field == 1 + 2 * 2 * 31
    one = TCN(4, 8, (1, 2, 4, 8, 16), kernel_size=3, convs_per_block=1)  # SATN's one-conv layers
    assert one.receptive_field == 1 + 2 * 31
    assert all(len(b.convs) == 1 for b in one.blocks)
    # the receptive field is exact: an impulse at t=0 reaches frame 62, not 63
    x = torch.zeros(1, 80, 4)
    x[0, 0] = 1.0
    base = one.eval()(torch.zeros(1, 80, 4), torch.tensor([80]))
    moved = (one(x, torch.tensor([80])) - base).abs().sum(-1)[0]
    assert moved[one.receptive_field - 1] > 0 and moved[one.receptive_field:].abs().max() == 0


def test_attention_rows_are_distributions_over_real_frames():
    attn = MultiHeadSelfAttention(16, 4)
    x, lengths = _batch([10, 6], dim=16)
    _, a = attn(x, lengths, weights=True)
    assert a.shape == (2, 4, 10, 10)
    assert torch.allclose(a.sum(-1), torch.ones(2, 4, 10))
    assert a[1, :, :, 6:].abs().max() == 0


def test_masked_mean_ignores_padding():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(x, torch.tensor([2])).item() == 2.0


def test_gradients_reach_every_parameter():
    model = build_model(_mc(channels=16, heads=2, dilations=(1, 2)), (120,), 4)
    x, lengths = _batch([30, 18])
    model(x, lengths).logits.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing


def test_registry_knows_tcn_self_and_rejects_unknown_names_and_shapes():
    assert "tcn_self" in available()
    with pytest.raises(ConfigError, match="unknown model variant"):
        build_model(ModelConfig(variant="nope"), (120,), 4)
    with pytest.raises(ConfigError, match="frames of one axis"):
        build_model(ModelConfig(), (32, 129), 4)
    with pytest.raises(ConfigError, match=r"model.attention.heads must divide the encoder's "
                       r"output size 30 \(model.tcn.channels\), not 4"):
        build_model(_mc(channels=30, heads=4), (120,), 4)


def test_every_variant_draws_dropout_from_the_trainers_generator():
    from satn.models.segment_variants import VARIANTS as SEGMENT_VARIANTS

    for name in available():
        frame = (32, 129) if name in SEGMENT_VARIANTS else (120,)  # segments or log-mel
        model = build_model(ModelConfig(variant=name), frame, 4)
        assert not any(type(m) is torch.nn.Dropout for m in model.modules()), name
        assert use_generator(model, torch.Generator()) > 0, name


def test_seeded_dropout_is_reproducible_unbiased_and_off_in_eval():
    drop = Dropout(0.25)
    x = torch.ones(200, 100)
    drop.generator = torch.Generator().manual_seed(3)
    a = drop(x)
    drop.generator = torch.Generator().manual_seed(3)
    assert torch.equal(drop(x), a)
    assert torch.allclose(a.unique(), torch.tensor([0.0, 1 / 0.75]))
    assert a.mean().item() == pytest.approx(1.0, abs=0.02)  # inverted dropout keeps the mean
    assert torch.equal(drop.eval()(x), x)
    with pytest.raises(ValueError, match="dropout"):
        Dropout(1.0)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_recurrent_encoder_ignores_padding_in_both_directions(cell, bidirectional):
    torch.manual_seed(0)
    enc = RecurrentEncoder(8, cell, hidden=6, layers=2, bidirectional=bidirectional).eval()
    assert enc.output_dim == 6 * (2 if bidirectional else 1)
    x, lengths = _batch([15, 9, 4], dim=8)
    x[1, 9:] = 1e3  # garbage in the padding: a backward pass that read it would change
    layers = enc.forward_layers(x, lengths)
    assert len(layers) == 2 and layers[-1].shape == (3, 15, enc.output_dim)
    for i, n in enumerate(lengths.tolist()):
        alone = enc.forward_layers(x[i:i + 1, :n], lengths[i:i + 1])
        for got, want in zip(layers, alone, strict=True):
            assert torch.allclose(got[i, :n], want[0], atol=1e-5)
            assert got[i, n:].abs().sum() == 0


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_the_cpus_padded_path_gives_the_packed_paths_outputs_and_gradients(cell, bidirectional):
    from satn.models.recurrent import CELLS, run_packed, run_padded

    torch.manual_seed(0)
    rnn = CELLS[cell](5, 7, batch_first=True, bidirectional=bidirectional).double()
    x = torch.randn(4, 23, 5, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([23, 6, 1, 17])
    weights = torch.randn(23, 7 * (2 if bidirectional else 1), dtype=torch.float64)
    got = []
    for run in (run_packed, run_padded):
        out = run(rnn, x, lengths)
        got.append((out, torch.autograd.grad((out * weights).sum(), [x, *rnn.parameters()])))
    (packed, packed_grads), (padded, padded_grads) = got
    assert packed.shape == padded.shape == (4, 23, weights.shape[1])
    assert torch.allclose(padded, packed, atol=1e-12)
    for want, have in zip(packed_grads, padded_grads, strict=True):
        assert torch.allclose(have, want, atol=1e-10)


def test_recurrent_encoder_direction_is_what_it_says():
    torch.manual_seed(0)
    x, lengths = _batch([20], dim=4)
    future = x.clone()
    future[0, 12:] += 3.0
    uni = RecurrentEncoder(4, "gru", hidden=5, bidirectional=False).eval()
    assert torch.allclose(uni(x, lengths)[0, :12], uni(future, lengths)[0, :12])
    bi = RecurrentEncoder(4, "gru", hidden=5, bidirectional=True).eval()
    # the backward half of frame 0 has seen the change at frame 12
    assert not torch.allclose(bi(x, lengths)[0, 0, 5:], bi(future, lengths)[0, 0, 5:])


def test_maps_are_named_and_only_filled_when_asked():
    torch.manual_seed(0)
    model = build_model(_mc(channels=16, heads=2, dilations=(1, 2, 4)), (120,), 4).eval()
    x, lengths = _batch([12, 7])
    plain = model(x, lengths)
    assert plain.maps == {}
    out = model(x, lengths, return_maps=True)
    assert list(out.maps) == ["encoder.layer0", "encoder.layer1", "encoder.layer2", "attention"]
    assert out.maps["encoder.layer2"].shape == (2, 12, 16)
    assert out.maps["attention"].shape == (2, 2, 12, 12)
    # the same up to rounding: maps come from the explicit softmax, not the fused kernel
    assert torch.allclose(out.logits, plain.logits, atol=1e-6)
    # the last layer's map is what the readout read: zero past each length
    assert out.maps["encoder.layer2"][1, 7:].abs().max() == 0


def _small(variant: str, form: str = "paper", causal: bool = True) -> ModelConfig:
    return ModelConfig(variant, dropout=0.1,
                       tcn=TCNSettings(8, dilations=(1, 2, 4), causal=causal, convs_per_block=1),
                       rnn=RecurrentSettings(hidden=6),
                       attention=AttentionSettings(form=form, heads=2))


# SATN's variants read log-mel frames; TACN's segment variants are tested in
# test_segment_variants.py
VARIANTS = sorted(v for v in available() if not v.startswith(("deep_", "fusion_")))


def test_the_eight_variants_of_table_2_are_registered():
    assert set(VARIANTS) >= {f"{e}_{r}{t}" for e in ("tcn", "blstm") for r in ("soft", "self")
                             for t in ("", "_at")}
    assert {v for v in VARIANTS if uses_transfer(v)} == {v for v in VARIANTS if v.endswith("_at")}
    assert families("blstm_soft") == ("rnn", "attention")
    assert families("tcn_self_at") == ("tcn", "attention")


@pytest.mark.parametrize("form", ["paper", "multihead"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_is_shaped_masked_and_its_attention_is_a_distribution(variant, form):
    torch.manual_seed(0)
    model = build_model(_small(variant, form), (10,), 4).eval()
    x, lengths = _batch([17, 11, 5], dim=10)
    x[1, 11:] = 1e3  # garbage in the padding must not leak anywhere
    out = model(x, lengths, return_maps=True)
    assert out.logits.shape == (3, 4)
    soft = "_soft" in variant
    a = out.maps["attention"]
    heads = 1 if form == "paper" else 2
    assert a.shape == ((3, 17) if soft else (3, heads, 17, 17))
    mask = length_mask(lengths, 17)
    # soft: one distribution per utterance; self: one per query frame and head
    assert torch.allclose(a.sum(-1), torch.ones(a.shape[:-1]), atol=1e-5)
    key_pad = ~mask if soft else ~mask[:, None, None, :].expand_as(a)
    assert a[key_pad].abs().sum() == 0
    enc = [k for k in out.maps if k.startswith("encoder.layer")]
    assert len(enc) == (3 if variant.startswith("tcn") else 1)
    dim = 8 if variant.startswith("tcn") else 12
    for k in enc:
        assert out.maps[k].shape == (3, 17, dim) and out.maps[k][~mask].abs().sum() == 0
    for i, n in enumerate(lengths.tolist()):
        alone = model(x[i:i + 1, :n], lengths[i:i + 1], return_maps=True)
        assert torch.allclose(out.logits[i], alone.logits[0], atol=1e-5)
        got = a[i, :n] if soft else a[i, :, :n, :n]
        assert torch.allclose(got, alone.maps["attention"][0], atol=1e-5)
        for k in enc:
            assert torch.allclose(out.maps[k][i, :n], alone.maps[k][0], atol=1e-5)


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.startswith("tcn")])
def test_tcn_variants_encode_causally(variant):
    torch.manual_seed(0)
    model = build_model(_small(variant), (10,), 4).eval()
    x, lengths = _batch([30], dim=10)
    future = x.clone()
    future[0, 20:] += 4.0
    a = model(x, lengths, return_maps=True).maps
    b = model(future, lengths, return_maps=True).maps
    for k in [k for k in a if k.startswith("encoder.layer")]:
        assert torch.allclose(a[k][0, :20], b[k][0, :20], atol=1e-6), k
        assert not torch.allclose(a[k][0, 20:], b[k][0, 20:]), k


def test_soft_attention_is_the_tanh_energy_softmax_of_eqs_1_to_3():
    torch.manual_seed(0)
    att = SoftAttention(5, energy_dim=3)
    h, lengths = _batch([6, 4], dim=5)
    ctx, alpha = att(h, lengths)
    e = torch.tanh(h @ att.energy.weight.T + att.energy.bias) @ att.score.weight.T  # (B, T, 1)
    want = torch.softmax(e[1, :4, 0], 0)
    assert torch.allclose(alpha[1, :4], want, atol=1e-6) and alpha[1, 4:].abs().sum() == 0
    assert torch.allclose(ctx[1], (want[:, None] * h[1, :4]).sum(0), atol=1e-6)


def test_paper_self_attention_has_one_head_no_projection_and_no_residual():
    torch.manual_seed(0)
    model = build_model(_small("tcn_self", "paper"), (10,), 4)
    readout = model.readout
    assert readout.attn.heads == 1 and readout.attn.d_k == 8
    assert isinstance(readout.attn.out, torch.nn.Identity)
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in readout.modules())
    multi = build_model(_small("tcn_self", "multihead"), (10,), 4).readout
    assert multi.attn.heads == 2 and isinstance(multi.attn.out, torch.nn.Linear)


def test_blstm_variants_read_the_recurrent_settings():
    model = build_model(ModelConfig("blstm_soft"), (120,), 4)  # SATN 4.3: 128 units each way
    lstm = model.encoder.rnns[0]
    assert isinstance(lstm, torch.nn.LSTM) and lstm.bidirectional and lstm.hidden_size == 128
    assert model.encoder.output_dim == 256
    with pytest.raises(ConfigError, match=r"2 x model.rnn.hidden"):
        build_model(ModelConfig("blstm_self", rnn=RecurrentSettings(hidden=5),
                                attention=AttentionSettings(heads=4)), (120,), 4)


def test_a_variant_is_shaped_only_by_the_settings_it_reads():
    from satn.models import families, reads_setting

    assert "rnn" not in families("tcn_self")
    assert not reads_setting("tcn_self", "model.rnn.hidden")  # a BLSTM's size: not a TCN's
    assert reads_setting("tcn_self", "model.tcn.dilations")
    assert reads_setting("blstm_self", "model.rnn.hidden")
    assert not reads_setting("tcn_self", "transfer.weight")  # no teacher, no transfer
    assert reads_setting("tcn_self_at", "transfer.weight")
    assert reads_setting("tcn_self", "train.epochs") and reads_setting("tcn_self", "model.dropout")
    assert reads_setting("svm/compare", "model.rnn.hidden")  # no variant: everything counts
