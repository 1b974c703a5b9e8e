"""TACN end to end through the real entry points (slow): every deep_*/fusion_* variant
trains on the demo corpus with `satn train`, a VQ-VAE pretrains with `satn
pretrain-vqvae` and feeds a fusion model, `satn tacn-figures` draws Figures 4-5,
and a sweep runs a TACN grid."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner
from userenv import tiny_workspace

from satn.cli import main, sweep_main
from satn.models.segment_variants import VARIANTS

pytestmark = pytest.mark.slow

TINY = {
    "data": {"corpus": "demo", "demo_per_class": 2},
    "features": {"kind": "spectrogram_segments"},
    "model": {"dropout": 0.1, "cnn": {"channels": [4, 8], "out_dim": 16},
              "rnn": {"hidden": 8}, "tcn": {"channels": 8, "dilations": [1, 2]},
              "tacn": {"channels": 8, "heads": 2, "layers": 2},
              "vqvae": {"hidden": 8, "code_dim": 4, "codebook_size": 16}, "fusion": {"dim": 16}},
    "train": {"epochs": 1, "batch_size": 8, "lr": 1.0, "optimizer": "adadelta",
              "device": "cpu"},
}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return tiny_workspace(tmp_path_factory.mktemp("tacn"), TINY, "tacn", 1)


def _run(cmd, args):
    result = CliRunner().invoke(cmd, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _common(ws):
    return ["--config", ws / "tiny.yaml", "--ray-config", ws / "runtime.yaml"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_trains_through_satn_train(ws, variant):
    out = _run(main, ["train", *_common(ws), "--variant", variant, "--fold", "1"])
    assert "fold1" in out and "MLflow run" in out


def test_pretrained_vqvae_feeds_a_fusion_model_and_figures_follow(ws):
    out = _run(main, ["pretrain-vqvae", *_common(ws), "--steps", 6, "--eval-every", 3,
                      "--batch-size", 16, "--device", "cpu", "--out", ws / "vq"])
    assert "perplexity" in out and "MLflow run" in out
    artifact = next((ws / "vq").glob("vqvae-demo-satn-*.pt"))
    runs = {}
    for v in ("deep_tacn", "fusion_tacn"):
        out = _run(main, ["train", *_common(ws), "--variant", v, "--fold", "1",
                          "--set", f"model.vqvae.checkpoint={artifact}"])
        runs[v] = out.split("MLflow run ")[1].split()[0]
    out = _run(main, ["tacn-figures", runs["deep_tacn"], runs["fusion_tacn"], "--ray-config",
                      ws / "runtime.yaml", "--out", ws / "figs"])
    assert (ws / "figs" / "tsne_test.png").is_file() and "fusion_tacn" in out


def test_a_sweep_runs_a_tacn_grid(ws):
    space = ws / "space.yaml"
    space.write_text(yaml.safe_dump({
        "name": "tacn-e2e", "metric": "dev_ua_best", "mode": "max", "num_samples": 1,
        "algorithm": "random", "scheduler": {"kind": "fifo"},
        "fixed": {"folds.scheme": "stratified_split"},
        "params": {"model.variant": {"grid": ["deep_tacn", "fusion_tcn"]}}}))
    out = _run(sweep_main, ["--space", space, *_common(ws), "--name", "tacn-sweep"])
    assert "sweep tacn-sweep: 2 trial(s)" in out and "0 failed" in out
