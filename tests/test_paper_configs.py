"""The TACN paper configs say what TACN Sec. 3.1 says, and every variant of their grids builds."""

from pathlib import Path

import pytest

from satn.config import ExperimentConfig
from satn.features import frame_shape
from satn.models import available, build_model
from satn.space import load_space

ROOT = Path(__file__).resolve().parents[1] / "experiments"
SEQS = ("rnn", "gru", "bigru", "lstm", "blstm", "tcn", "tacn")
CONFIGS = ("tacn_table1", "tacn_table2", "tacn_table1_loso", "tacn_table2_loso")


def _cfg(name: str) -> ExperimentConfig:
    return ExperimentConfig.from_yaml(ROOT / "paper" / f"{name}.yaml")


@pytest.mark.parametrize("name", CONFIGS)
def test_data_features_training_match_tacn_3_1(name):
    cfg = _cfg(name)
    assert cfg.data.corpus == "iemocap" and cfg.data.protocol == "full"  # 5531 utterances
    assert dict(cfg.data.label_map) == {"exc": "hap"}
    assert set(cfg.data.classes) == {"neu", "hap", "sad", "ang"}
    f = cfg.features
    assert f.kind == "spectrogram_segments" and frame_shape(f) == (32, 129)
    # 32 frames of an 8 ms hop with a 16 ms window: 31 * 8 + 16 = 264 ms, the paper's 265 ms
    assert ((f.seg_frames - 1) * f.seg_hop + f.seg_n_fft) / f.sample_rate == pytest.approx(0.264)
    t = cfg.train
    assert (t.optimizer, t.batch_size, t.class_weighting) == ("adadelta", 128, "none")
    assert (cfg.model.tacn.layers, cfg.model.tacn.kernel_size, cfg.model.tacn.heads) == (8, 3, 8)


@pytest.mark.parametrize("name", ["tacn_table1", "tacn_table2"])
def test_paper_protocol_is_a_stratified_80_20_split_and_loso_differs_only_there(name):
    paper, loso = _cfg(name), _cfg(f"{name}_loso")
    assert paper.folds.scheme == "stratified_split" and paper.folds.test_share == 0.2
    assert loso.folds.scheme == "loso"
    assert (paper.data, paper.features, paper.model, paper.train) == (
        loso.data, loso.features, loso.model, loso.train)


def test_grids_name_the_papers_variants_and_each_builds():
    t1 = load_space(str(ROOT / "spaces" / "tacn_table1.yaml"))
    t2 = load_space(str(ROOT / "spaces" / "tacn_table2.yaml"))
    v1, v2 = t1.params["model.variant"].values, t2.params["model.variant"].values
    assert sorted(v1) == sorted(f"{f}_{s}" for f in ("deep", "fusion") for s in SEQS)
    assert sorted(v2) == ["deep_tacn", "deep_tcn", "fusion_tacn", "fusion_tcn"]
    cfg = _cfg("tacn_table1")
    t1.validate(cfg)
    t2.validate(cfg)
    for v in v1:
        assert v in available()
        model = build_model(cfg.override({"model.variant": v}).model, (32, 129), 4)
        assert sum(p.numel() for p in model.parameters()) > 0
