"""`satn teacher` end to end through the installed CLI: demo corpus, and ARCTIC when present."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from satn.teacher_io import load_teacher

SATN = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "satn"
TINY_TEACHER = {
    "model": {"channels": 8, "decoder_units": 16, "attention_dim": 8, "embed_dim": 8,
              "dilations": [1, 2, 4, 8, 16], "ctc_head": True},
    "epochs": 1, "batch_size": 16, "lr": 1e-3, "device": "cpu", "ctc_weight": 0.3,
    "eval_max": 4,
}


def _satn(args, cwd: Path) -> subprocess.CompletedProcess:
    exe = str(SATN) if SATN.exists() else shutil.which("satn")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([exe, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _runtime(tmp: Path) -> Path:
    path = tmp / "runtime.yaml"
    path.write_text(yaml.safe_dump({
        "features_dir": str(tmp / "features"), "data_dir": str(tmp / "data"),
        "mlflow": {"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": "t"}}))
    return path


def _teacher_file(out: str) -> Path:
    line = next(ln for ln in out.splitlines() if ln.startswith("teacher file: "))
    return Path(line.removeprefix("teacher file: "))


@pytest.mark.slow  # demo synthesis, features, MLflow: about a minute on a busy CPU
def test_satn_teacher_trains_on_the_demo_corpus_and_logs_to_mlflow(tmp_path):
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(TINY_TEACHER))
    result = _satn(["teacher", "--corpus", "demo", "--set", "data.demo_per_class=1",
                    "--ray-config", _runtime(tmp_path), "--teacher-config",
                    tmp_path / "teacher.yaml", "--set", "teacher.beam_width=2",
                    "--decode", "beam", "--out", tmp_path / "demo-teacher.pt"], tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout
    assert "epoch   1" in out and "PER" in out and "WER" in out
    assert "not in the CMU dictionary" in out  # the OOV report
    path = _teacher_file(out)
    assert path == (tmp_path / "demo-teacher.pt").resolve()
    teacher = load_teacher(path)
    assert teacher.meta["report"]["config"]["beam_width"] == 2
    assert teacher.meta["report"]["final"]["decode"] == "beam"
    assert teacher.meta["report"]["corpus"] == "demo"
    x = torch.randn(2, 30, teacher.features.dim)
    maps = teacher.model.maps(x, torch.tensor([30, 12]))
    assert set(maps) == set(teacher.map_names)

    from mlflow.tracking import MlflowClient

    from satn.teacher_io import TeacherFileError
    from satn.tracking import find_teacher, teacher_path

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = out.split("MLflow run ")[1].split()[0]
    run = MlflowClient(tracking_uri=uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["teacher.lr"] == "0.001" and run.data.params["data.corpus"] == "demo"
    history = MlflowClient(tracking_uri=uri).get_metric_history(run_id, "heldout_per")
    assert [m.step for m in history] == [1]
    assert "final_wer" in run.data.metrics
    fetched = find_teacher(uri, run_id, tmp_path / "dl")
    assert fetched.read_bytes() == path.read_bytes()
    assert teacher_path(path, uri, tmp_path / "dl2") == path
    assert teacher_path(run_id, uri, tmp_path / "dl2").read_bytes() == path.read_bytes()
    with pytest.raises(TeacherFileError, match="neither a teacher file nor"):
        teacher_path("0123456789abcdef", uri, tmp_path / "dl3")


def test_satn_teacher_in_process_on_a_small_arctic_layout(tmp_path):
    """The command's whole path (corpus, features, split, training, file) in seconds."""
    from click.testing import CliRunner
    from test_corpora_arctic import _corpus

    from satn.cli import main

    root = _corpus(tmp_path / "arctic", stems=("arctic_a0001", "arctic_a0002", "arctic_b0311"))
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(
        {**TINY_TEACHER, "heldout_prompts": 0.34}))
    result = CliRunner().invoke(main, [str(a) for a in [
        "teacher", "--corpus", "arctic", "--root", root, "--ray-config", _runtime(tmp_path),
        "--teacher-config", tmp_path / "teacher.yaml", "--no-mlflow", "--epochs", "2",
        "--out", tmp_path / "t.pt"]], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "4 training / 2 held-out utterances" in result.output  # one prompt of three, twice
    assert result.output.count("held-out loss") == 2
    teacher = load_teacher(_teacher_file(result.output))
    report = teacher.meta["report"]
    assert report["split"]["n_heldout_prompts"] == 1 and report["corpus"] == "arctic"
    assert len(report["epochs"]) == 2 and report["final"]["n"] == 2


def test_satn_teacher_rejects_bad_settings_in_one_line(tmp_path):
    result = _satn(["teacher", "--corpus", "demo", "--set", "data.demo_per_class=1",
                    "--ray-config", _runtime(tmp_path), "--set", "teacher.ctc_weight=0.5",
                    "--no-mlflow"], tmp_path)
    assert result.returncode != 0
    assert "teacher.ctc_weight" in result.stderr and "Traceback" not in result.stderr


def _mini_arctic(src: Path, dst: Path, n: int) -> Path:
    """The first ``n`` prompts of each ARCTIC speaker, linked into a corpus of the same layout."""
    dst.mkdir(parents=True)
    shutil.copy(src / "cmuarctic.data", dst / "cmuarctic.data")
    for spk in ("bdl", "slt"):
        (dst / spk / "wav").mkdir(parents=True)
        for f in sorted((src / spk / "wav").iterdir())[:n]:
            (dst / spk / "wav" / f.name).symlink_to(f)
    return dst


@pytest.mark.slow
def test_satn_teacher_on_arctic(shared_corpora, tmp_path):
    root = _mini_arctic(shared_corpora / "arctic", tmp_path / "arctic", 6)
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(
        {**TINY_TEACHER, "heldout_speakers": ["slt"], "heldout_prompts": 0.0}))
    result = _satn(["teacher", "--corpus", "arctic", "--root", root, "--ray-config",
                    _runtime(tmp_path), "--teacher-config", tmp_path / "teacher.yaml",
                    "--no-mlflow"], tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "6 training / 6 held-out utterances (speakers held out: slt" in result.stdout
    teacher = load_teacher(_teacher_file(result.stdout))
    assert teacher.meta["report"]["split"]["train_speakers"] == ["bdl"]
