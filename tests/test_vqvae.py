"""VQ-VAE: shapes, straight-through gradient, codebook use, overfitting, pretraining, artifacts."""

import numpy as np
import pytest
import torch

from satn.checkpoint import load_vqvae, save_vqvae
from satn.config import ConfigError, PretrainConfig, VQVAESettings
from satn.models.vqvae import VQVAE, perplexity
from satn.pretrain import pretrain_vqvae, split_heldout

SHAPE = (8, 17)  # small segments: same code paths, a fraction of the cost


def _vq(**kw) -> VQVAE:
    torch.manual_seed(0)
    args = {"hidden": 16, "code_dim": 4, "codebook_size": 16, "downsample": 2}
    return VQVAE(SHAPE, **{**args, **kw})


def test_shapes_and_latent_is_flat_decoder_input():
    m = _vq()
    assert m.grid == (2, 5)  # 8 x 17 padded to 8 x 20, halved twice
    out = m(torch.randn(3, *SHAPE))
    assert out.recon.shape == (3, *SHAPE)
    assert out.z_q.shape == (3, 4, 2, 5) and out.codes.shape == (3, 2, 5)
    r_l, _ = m.eval().latent(torch.randn(3, *SHAPE))
    assert r_l.shape == (3, m.latent_dim) and m.latent_dim == 4 * 2 * 5
    # in eval the decoder input is exactly a codebook entry at every grid point
    out = m(torch.randn(2, *SHAPE))
    codes = m.quantizer.codebook[out.codes]  # (2, 2, 5, D)
    torch.testing.assert_close(out.z_q.permute(0, 2, 3, 1), codes)


@pytest.mark.parametrize("ema", [True, False])
def test_losses_by_name(ema):
    out = _vq(ema=ema)(torch.randn(4, *SHAPE))
    expected = {"vq_commitment", "vq_reconstruction"} | (set() if ema else {"vq_codebook"})
    assert set(out.losses) == expected
    assert all(v.ndim == 0 and v >= 0 for v in out.losses.values())


def test_straight_through_gradient_reaches_encoder():
    m = _vq()
    out = m(torch.randn(4, *SHAPE))
    out.losses["vq_reconstruction"].backward()  # no path but through the quantiser
    assert m.encoder[0].weight.grad is not None
    assert m.encoder[0].weight.grad.abs().sum() > 0


def test_learned_codebook_gets_gradient_only_from_its_loss():
    m = _vq(ema=False)
    out = m(torch.randn(4, *SHAPE))
    out.losses["vq_codebook"].backward()
    embed = m.quantizer._codebook.embed
    assert embed.grad is not None and embed.grad.abs().sum() > 0
    assert m.encoder[0].weight.grad is None  # codebook loss stops the encoder's gradient


def test_perplexity_values():
    assert float(perplexity(torch.zeros(10, dtype=torch.long), 8)) == pytest.approx(1.0)
    assert float(perplexity(torch.arange(8).repeat(3), 8)) == pytest.approx(8.0, rel=1e-5)


def _train(m: VQVAE, x: torch.Tensor, steps: int) -> list[float]:
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        m.train()
        out = m(x)
        loss = sum(out.losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(out.losses["vq_reconstruction"].detach()))
    return losses


def test_codebook_is_used_after_a_few_steps():
    torch.manual_seed(1)
    m = _vq()
    x = torch.randn(32, *SHAPE)
    _train(m, x, 5)
    m.eval()
    assert float(perplexity(m(x).codes, m.codebook_size)) > 1.5


def test_overfits_a_few_segments():
    torch.manual_seed(2)
    m = _vq(codebook_size=32, hidden=32)
    # four smooth "spectrogram" patterns: learnable in a few hundred steps
    t = torch.linspace(0, 1, SHAPE[0])[:, None]
    f = torch.linspace(0, 1, SHAPE[1])[None, :]
    x = torch.stack([torch.sin(6 * f + k) * torch.cos(3 * t * k) for k in range(4)])
    losses = _train(m, x, 250)
    m.eval()
    with torch.no_grad():
        final = float((m(x).recon - x).square().mean())
    assert final < 0.1 * losses[0], (losses[0], final)


def test_split_heldout_is_seeded_and_disjoint():
    ids = [f"u{i}" for i in range(20)]
    a = split_heldout(ids, 0.25, seed=3)
    assert a == split_heldout(ids, 0.25, seed=3)
    assert a != split_heldout(ids, 0.25, seed=4)
    train, held = a
    assert len(held) == 5 and set(train) | set(held) == set(range(20))
    assert not set(train) & set(held)


def _utterances(n: int = 8) -> tuple[list[np.ndarray], list[str]]:
    rng = np.random.default_rng(0)
    arrays = [rng.normal(3.0, 2.0, size=(int(rng.integers(2, 6)), *SHAPE)).astype(np.float32)
              for _ in range(n)]
    return arrays, [f"u{i}" for i in range(n)]


def test_pretrain_reports_heldout_and_artifact_round_trips(tmp_path):
    arrays, ids = _utterances()
    vq = VQVAESettings(hidden=8, code_dim=4, codebook_size=8)
    seen = []
    res = pretrain_vqvae(arrays, ids, vq, PretrainConfig(steps=6, batch_size=8, eval_every=3,
                                                         heldout=0.25, device="cpu"),
                         on_eval=seen.append)
    assert [e.step for e in res.history] == [3, 6] and seen == res.history
    assert not set(res.train_ids) & set(res.heldout_ids) and len(res.heldout_ids) == 2
    assert res.n_heldout_segments == sum(len(arrays[ids.index(u)]) for u in res.heldout_ids)
    assert res.normalizer.mean.shape == (SHAPE[1],)  # per frequency bin
    assert 1.0 <= res.final.heldout_perplexity <= vq.codebook_size
    path = save_vqvae(tmp_path / "v.pt", res.model, settings=vq, normalizer=res.normalizer)
    art = load_vqvae(path)
    x = torch.randn(3, *SHAPE)
    torch.testing.assert_close(art.model(x).recon, res.model(x).recon)
    assert art.settings == vq and art.segment_shape == SHAPE


def test_load_vqvae_rejects_foreign_files(tmp_path):
    bad = tmp_path / "x.pt"
    torch.save({"weights": 1}, bad)
    with pytest.raises(ConfigError, match="not a satn VQ-VAE"):
        load_vqvae(bad)
    with pytest.raises(ConfigError, match="no file"):
        load_vqvae(tmp_path / "missing.pt")


def test_folder_manifest_lists_every_audio_file_by_speaker(tmp_path):
    import csv

    from satn.corpora.manifest import load_manifest, write_folder_manifest

    for spk in ("bdl", "slt"):
        (tmp_path / "arctic" / spk).mkdir(parents=True)
        for name in ("a0001.wav", "a0002.flac", "notes.txt"):
            (tmp_path / "arctic" / spk / name).write_bytes(b"x")
    out = write_folder_manifest(tmp_path / "arctic", tmp_path / "m.csv")
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4 and {r["speaker"] for r in rows} == {"bdl", "slt"}
    assert len({r["id"] for r in rows}) == 4  # two speakers' a0001 stay apart
    load = load_manifest(out, classes=("speech", "none"))
    assert len(load.utterances) == 4 and not load.problems
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no"):
        write_folder_manifest(tmp_path / "empty", tmp_path / "x.csv")


def test_pretraining_needs_two_utterances_and_segments():
    arrays, ids = _utterances(2)
    with pytest.raises(ConfigError, match="at least 2"):
        pretrain_vqvae(arrays[:1], ids[:1], VQVAESettings(), PretrainConfig(device="cpu"))
    with pytest.raises(ConfigError, match="spectrogram_segments"):
        pretrain_vqvae([a[:, 0] for a in arrays], ids, VQVAESettings(),
                       PretrainConfig(device="cpu"))
