"""The TACN paper grids say what TACN Sec. 3.1 says, and every variant in them builds."""

from pathlib import Path

import pytest

from satn.config import ExperimentConfig
from satn.features import frame_shape
from satn.models import available, build_model
from satn.space import load_space

PAPER = Path(__file__).resolve().parents[1] / "experiments" / "paper"
SEQS = ("rnn", "gru", "bigru", "lstm", "blstm", "tcn", "tacn")


def _cfg(space_name: str):
    base = ExperimentConfig.from_yaml(PAPER / "tacn_iemocap.yaml")
    space = load_space(str(PAPER / f"{space_name}.yaml"))
    space.validate(base)
    return base.override(space.fixed), space


def test_protocol_data_and_features_match_tacn_3_1():
    cfg = ExperimentConfig.from_yaml(PAPER / "tacn_iemocap.yaml")
    assert cfg.data.corpus == "iemocap" and cfg.data.protocol == "full"  # 5531 utterances
    assert dict(cfg.data.label_map) == {"exc": "hap"}
    assert set(cfg.data.classes) == {"neu", "hap", "sad", "ang"}
    f = cfg.features
    assert f.kind == "spectrogram_segments" and frame_shape(f) == (32, 129)
    # 32 frames of an 8 ms hop with a 16 ms window: 31 * 8 + 16 = 264 ms, the paper's 265 ms
    ms = ((f.seg_frames - 1) * f.seg_hop + f.seg_n_fft) / f.sample_rate * 1000
    assert ms == pytest.approx(264.0)


@pytest.mark.parametrize("name", ["tacn_table1", "tacn_table2"])
def test_paper_protocol_training_matches_tacn_3_1(name):
    cfg, _ = _cfg(name)
    assert cfg.folds.scheme == "stratified_split" and cfg.folds.test_share == 0.2
    t = cfg.train
    assert (t.optimizer, t.batch_size, t.class_weighting) == ("adadelta", 128, "none")
    assert (cfg.model.tacn.layers, cfg.model.tacn.kernel_size, cfg.model.tacn.heads) == (8, 3, 8)


@pytest.mark.parametrize("name", ["tacn_table1_loso", "tacn_table2_loso"])
def test_loso_versions_differ_only_in_folds(name):
    cfg, space = _cfg(name)
    paper, paper_space = _cfg(name.removesuffix("_loso"))
    assert cfg.folds.scheme == "loso"
    assert cfg.train == paper.train and cfg.model == paper.model
    assert space.params == paper_space.params


def test_grids_name_the_papers_variants_and_each_builds():
    t1 = load_space(str(PAPER / "tacn_table1.yaml")).params["model.variant"].values
    t2 = load_space(str(PAPER / "tacn_table2.yaml")).params["model.variant"].values
    assert sorted(t1) == sorted(f"{f}_{s}" for f in ("deep", "fusion") for s in SEQS)
    assert sorted(t2) == ["deep_tacn", "deep_tcn", "fusion_tacn", "fusion_tcn"]
    cfg, _ = _cfg("tacn_table1")
    for v in t1:
        assert v in available()
        model = build_model(cfg.override({"model.variant": v}).model, (32, 129), 4)
        assert sum(p.numel() for p in model.parameters()) > 0
