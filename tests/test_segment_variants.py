"""deep_<seq> / fusion_<seq>: every variant builds, ignores padding, and trains; fusion losses."""

import numpy as np
import pytest
import torch

from satn.batching import SequenceDataset
from satn.checkpoint import save_vqvae
from satn.config import ConfigError, ExperimentConfig, TrainConfig
from satn.engine import FoldData, fit, lr_factor, make_optimizer
from satn.models import build_model, families
from satn.models.segment_variants import VARIANTS
from satn.models.segments import FusionFront
from satn.models.vqvae import build_vqvae

SHAPE = (8, 17)
TINY = {"model.cnn.channels": "4,8", "model.cnn.out_dim": 12, "model.rnn.hidden": 6,
        "model.tcn.channels": 8, "model.tcn.dilations": "1,2", "model.tacn.channels": 8,
        "model.tacn.heads": 2, "model.tacn.layers": 2, "model.vqvae.hidden": 8,
        "model.vqvae.code_dim": 4, "model.vqvae.codebook_size": 8, "model.fusion.dim": 12,
        "model.dropout": 0.0}


def _cfg(variant: str, **extra):
    return ExperimentConfig().override({**TINY, "model.variant": variant, **extra}).model


def _model(variant: str, **extra):
    torch.manual_seed(0)
    return build_model(_cfg(variant, **extra), SHAPE, 4)


def test_fourteen_variants_are_registered_with_their_families():
    assert len(VARIANTS) == 14 and "deep_tacn" in VARIANTS and "fusion_blstm" in VARIANTS
    assert families("fusion_tacn") == ("cnn", "vqvae", "fusion", "tacn", "attention")
    assert families("deep_bigru") == ("cnn", "rnn", "attention")


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_shapes_and_padding_invariance(variant):
    m = _model(variant).eval()
    torch.manual_seed(1)
    x = torch.randn(2, 5, *SHAPE)
    x[1, 3:] = 50.0  # padding garbage
    lengths = torch.tensor([5, 3])
    out = m(x, lengths)
    assert out.logits.shape == (2, 4) and torch.isfinite(out.logits).all()
    alone = m(x[1:, :3], torch.tensor([3])).logits
    torch.testing.assert_close(out.logits[1:], alone, atol=1e-5, rtol=1e-4)


def test_recurrent_variant_names_fix_cell_and_direction():
    enc = _model("deep_bigru").encoder.sequence
    assert isinstance(enc.rnns[0], torch.nn.GRU) and enc.rnns[0].bidirectional
    enc = _model("deep_lstm", **{"model.rnn.bidirectional": True}).encoder.sequence
    assert isinstance(enc.rnns[0], torch.nn.LSTM) and not enc.rnns[0].bidirectional


def test_logmel_frames_are_refused():
    with pytest.raises(ConfigError, match="spectrogram_segments"):
        build_model(_cfg("deep_tacn"), (120,), 4)


def test_fusion_losses_by_name_only_when_finetuning():
    x, lengths = torch.randn(2, 4, *SHAPE), torch.tensor([4, 2])
    m = _model("fusion_tcn", **{"model.vqvae.loss_weight": 0.5}).train()
    aux = m(x, lengths).aux_losses
    assert set(aux) == {"vq_reconstruction", "vq_commitment"}
    front = m.encoder.front
    seg = torch.cat([x[0, :4], x[1, :2]])  # the real segments, as the front end sees them
    own = front.vqvae(seg).losses["vq_reconstruction"]
    torch.testing.assert_close(aux["vq_reconstruction"], 0.5 * own)  # weighted by name
    assert set(m.eval()(x, lengths).aux_losses) == set(aux)  # dev is scored with them too
    frozen = _model("fusion_tcn", **{"model.vqvae.finetune": False}).train()
    assert frozen(x, lengths).aux_losses == {}
    assert isinstance(frozen.encoder.front, FusionFront) and not frozen.encoder.front.vqvae.training
    assert not any(p.requires_grad for p in frozen.encoder.front.vqvae.parameters())
    assert front.output_dim == 12


def test_frozen_vqvae_codebook_does_not_move():
    m = _model("fusion_gru", **{"model.vqvae.finetune": False}).train()
    before = m.encoder.front.vqvae.quantizer.codebook.clone()
    m(torch.randn(3, 4, *SHAPE), torch.tensor([4, 4, 2]))
    torch.testing.assert_close(m.encoder.front.vqvae.quantizer.codebook, before)


def test_represent_gives_named_representations():
    m = _model("fusion_tacn").eval()
    reps = m.encoder.front.represent(torch.randn(2, 3, *SHAPE), torch.tensor([3, 1]))
    vq = m.encoder.front.vqvae
    assert reps["R_l"].shape == (2, 3, vq.latent_dim)
    assert reps["R_d"].shape == (2, 3, 12) and reps["R_f"].shape == (2, 3, 12)
    assert torch.all(reps["R_f"][1, 1:] == 0)


def test_pretrained_vqvae_is_loaded_and_sizes_checked(tmp_path):
    from satn.batching import Normalizer

    cfg = _cfg("fusion_tcn")
    torch.manual_seed(5)
    vq = build_vqvae(cfg.vqvae, SHAPE)
    norm = Normalizer(np.zeros(SHAPE[1]), np.ones(SHAPE[1]))
    path = save_vqvae(tmp_path / "vq.pt", vq, settings=cfg.vqvae, normalizer=norm)
    m = _model("fusion_tcn", **{"model.vqvae.checkpoint": str(path)})
    torch.testing.assert_close(m.encoder.front.vqvae.quantizer.codebook, vq.quantizer.codebook)
    with pytest.raises(ConfigError, match="codebook_size=8"):
        _model("fusion_tcn", **{"model.vqvae.checkpoint": str(path),
                                "model.vqvae.codebook_size": 16})
    with pytest.raises(ConfigError, match="model.vqvae.checkpoint"):
        _model("fusion_tcn", **{"model.vqvae.checkpoint": str(tmp_path / "none.pt")})


def _fold(n: int = 16) -> FoldData:
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(int(rng.integers(2, 5)), *SHAPE)).astype(np.float32)
              for _ in range(n)]
    labels = [i % 4 for i in range(n)]
    for a, y in zip(arrays, labels, strict=True):
        a[:, :, y * 4:(y + 1) * 4] += 2.0  # a learnable class cue in some bins
    ids = [f"u{i}" for i in range(n)]
    ds = SequenceDataset(arrays, labels, ids)
    return FoldData("f", ds, ds, ds, 4)


def test_fusion_trains_and_logs_its_auxiliary_losses():
    cfg = TrainConfig(epochs=2, batch_size=8, lr=1.0, optimizer="adadelta", device="cpu",
                      schedule="cosine", warmup_epochs=0.5)
    trainer = fit(_model("fusion_tacn"), _fold(), cfg)
    stats = trainer.history
    assert set(stats[-1].train_losses) == {"ser", "vq_reconstruction", "vq_commitment"}
    assert stats[-1].train_losses["vq_reconstruction"] < stats[0].train_losses["vq_reconstruction"]
    assert isinstance(trainer.opt, torch.optim.Adadelta)
    assert 0 <= stats[-1].lr < 1.0


def test_lr_factor_warmup_then_schedules():
    steps = 10
    cos = TrainConfig(epochs=4, schedule="cosine", warmup_epochs=1)
    assert [round(lr_factor(s, cos, steps), 2) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert lr_factor(10, cos, steps) == pytest.approx(1.0)
    assert lr_factor(39, cos, steps) < 0.01
    flat = TrainConfig(epochs=4)
    assert all(lr_factor(s, flat, steps) == 1.0 for s in range(40))
    one = TrainConfig(epochs=10, schedule="onecycle")  # 30 % warm-up by default
    rise = [lr_factor(s, one, steps) for s in range(30)]
    assert rise == sorted(rise) and rise[-1] == pytest.approx(1.0)
    assert lr_factor(99, one, steps) < 0.01


@pytest.mark.parametrize("name,kind", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                       ("adadelta", torch.optim.Adadelta),
                                       ("sgd", torch.optim.SGD)])
def test_optimizer_choice(name, kind):
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(2))], TrainConfig(optimizer=name))
    assert type(opt) is kind


def test_train_config_rejects_unknown_optimizer_and_schedule():
    with pytest.raises(ConfigError, match="train.optimizer"):
        TrainConfig(optimizer="lion")
    with pytest.raises(ConfigError, match="train.schedule"):
        TrainConfig(schedule="step")


def test_fusion_checkpoint_loads_without_its_vqvae_artifact(tmp_path):
    from satn.batching import Normalizer
    from satn.checkpoint import load_checkpoint, save_checkpoint

    cfg = ExperimentConfig().override({**TINY, "model.variant": "fusion_tcn"})
    torch.manual_seed(5)
    vq = build_vqvae(cfg.model.vqvae, SHAPE)
    vq(torch.randn(6, *SHAPE))  # a trained VQ-VAE has had its k-means initialisation
    norm = Normalizer(np.zeros(SHAPE[1]), np.ones(SHAPE[1]))
    art = save_vqvae(tmp_path / "vq.pt", vq, settings=cfg.model.vqvae, normalizer=norm)
    cfg = cfg.override({"model.vqvae.checkpoint": str(art)})
    model = build_model(cfg.model, SHAPE, 4).eval()
    path = save_checkpoint(tmp_path / "best.pt", model.state_dict(), cfg=cfg,
                           classes=("a", "b", "c", "d"), normalizer=norm, frame_shape=SHAPE)
    art.unlink()  # moved away: the checkpoint holds the VQ-VAE's weights itself
    ckpt = load_checkpoint(path)
    x = torch.randn(1, 3, *SHAPE)
    torch.testing.assert_close(ckpt.model(x, torch.tensor([3])).logits,
                               model(x, torch.tensor([3])).logits)
    assert ckpt.cfg.model.vqvae.checkpoint == str(art)
