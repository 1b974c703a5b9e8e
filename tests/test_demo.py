"""The demo corpus: IEMOCAP layout and formats, exact counts, determinism, emotion cues."""

from __future__ import annotations

import json
import re
import wave
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from satn.config import ConfigError
from satn.corpora.iemocap import load_iemocap
from satn.demo import MARKER, synth, write_demo_corpus

PER_CLASS = 2  # small: 40 * (2 + 1) + 25 = 145 wavs per corpus
LABEL_LINE = re.compile(
    r"\[(\d+\.\d{4}) - (\d+\.\d{4})\]\t(Ses0([1-5])[FM]_(?:impro\d\d|script\d\d_\d)_([FM])\d{3})"
    r"\t(neu|hap|exc|sad|ang|xxx|fru|oth)\t\[\d\.\d{4}, \d\.\d{4}, \d\.\d{4}\]"
)
CATEGORICAL_LINE = re.compile(r"C-(?:E\d|[FM]1):\t[A-Z][a-z]+;\t\(\)")
DIMENSIONAL_LINE = re.compile(r"A-(?:E\d|[FM]1):\tval [1-5]; act [1-5]; dom  [1-5];\t\([^()]*\)")
TRANSCRIPT_LINE = re.compile(
    r"(Ses0[1-5][FM]_\S+_[FM](?:\d{3}|XX0)) \[(\d{3}\.\d{4})-(\d{3}\.\d{4})\]: \S.*"
)
NO_ID_LINE = re.compile(r"[FM]: ?[A-Z][a-z]+\.")


def _need(backend: str) -> None:
    if backend == "espeak" and not synth.espeak_available():
        pytest.skip(f"libespeak-ng unavailable: {synth.espeak_problem()}")


@pytest.fixture(scope="module", params=["formant", "espeak"])
def corpus(request, tmp_path_factory):
    """(root, summary) of a small demo corpus, once per backend."""
    _need(request.param)
    root = tmp_path_factory.mktemp(f"demo-{request.param}")
    return root, write_demo_corpus(root, per_class=PER_CLASS, backend=request.param)


def _labels(root: Path) -> list[tuple[int, str, str, str, bool]]:
    """(session, id, gender, raw label, improvised) of every label line."""
    out = []
    for f in sorted(root.glob("Session*/dialog/EmoEvaluation/*.txt")):
        for line in f.read_text().splitlines():
            if m := LABEL_LINE.fullmatch(line):
                out.append((int(m[4]), m[3], m[5], m[6], "impro" in f.stem))
    return out


def _wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2") / 32768.0


def _f0(x: np.ndarray, sr: int = 16000) -> float:
    """Median F0 (Hz) of the loud frames, by normalised autocorrelation (60-500 Hz)."""
    frames = np.lib.stride_tricks.sliding_window_view(x, 640)[::160]
    energy = (frames**2).mean(axis=1)
    frames = frames[energy > 0.1 * energy.max()]
    frames = frames - frames.mean(axis=1, keepdims=True)
    ac = np.fft.irfft(np.abs(np.fft.rfft(frames, 2048)) ** 2)[:, :640]
    ac = ac / (ac[:, :1] + 1e-12)
    lo, hi = sr // 500, sr // 60
    seg = ac[:, lo:hi]
    peak = seg.max(axis=1)
    lag = lo + np.argmax(seg >= 0.9 * peak[:, None], axis=1)  # first near-maximal peak
    return float(np.median(sr / lag[peak > 0.5]))


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# ---------------------------------------------------------------- layout and formats


def test_layout_and_file_formats(corpus):
    root, summary = corpus
    assert sorted(p.name for p in root.glob("Session*")) == [f"Session{s}" for s in range(1, 6)]
    ids_with_label = set()
    for f in root.glob("Session*/dialog/EmoEvaluation/*.txt"):
        lines = f.read_text().split("\n")
        assert lines[0] == "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"
        for i, line in enumerate(lines[1:], start=1):
            if m := LABEL_LINE.fullmatch(line):
                assert lines[i - 1] == "", "a blank line before every turn"
                assert float(m[1]) < float(m[2])
                ids_with_label.add(m[3])
            else:
                assert (
                    line == ""
                    or CATEGORICAL_LINE.fullmatch(line)
                    or DIMENSIONAL_LINE.fullmatch(line)
                ), line
    assert ids_with_label
    n_no_id = 0
    for f in root.glob("Session*/dialog/transcriptions/*.txt"):
        raw = f.read_bytes()
        assert raw.endswith(b"\r\n") and raw.count(b"\n") == raw.count(b"\r\n"), "CRLF only"
        for line in raw.decode().split("\r\n")[:-1]:
            if NO_ID_LINE.fullmatch(line):
                n_no_id += 1
                continue
            m = TRANSCRIPT_LINE.fullmatch(line)
            assert m, line
            wav = f.parents[2] / "sentences" / "wav" / f.stem / f"{m[1]}.wav"
            duration = len(_wav(wav)) / 16000
            assert float(m[3]) - float(m[2]) == pytest.approx(duration, abs=2e-4)
            ids_with_label.discard(m[1])
    assert not ids_with_label, "every labelled turn has a transcript line and a wav"
    assert n_no_id == 2 * 5
    wavs = list(root.glob("Session*/sentences/wav/*/*.wav"))
    assert len(wavs) == summary.n_wavs
    # both actors speak in every dialog, whichever leads it
    for d in root.glob("Session*/sentences/wav/*"):
        assert {p.stem.rsplit("_", 1)[1][0] for p in d.glob("*.wav")} == {"F", "M"}


def test_audio_is_valid_speech_like_16k(corpus):
    root, _ = corpus
    for wav in sorted(root.glob("Session1/sentences/wav/*/*.wav"))[:20]:
        x = _wav(wav)
        assert 0.5 < len(x) / 16000 < 8.0
        assert np.abs(x).max() < 1.0  # soft-limited, never clipped
        assert 0.005 < np.sqrt(np.mean(x**2)) < 0.3
        assert np.abs(x[:400]).max() < 0.01  # starts with quiet padding


# ---------------------------------------------------------------- counts


def test_counts_follow_the_documented_formula(corpus):
    root, summary = corpus
    labels = _labels(root)
    impro = Counter((s, "hap" if raw == "exc" else raw) for s, _, _, raw, imp in labels if imp)
    script = Counter((s, "hap" if raw == "exc" else raw) for s, _, _, raw, imp in labels if not imp)
    for s in range(1, 6):
        for c in ("neu", "hap", "sad", "ang"):
            assert impro[s, c] == 2 * PER_CLASS
            assert script[s, c] == 2 * 1
            assert summary.counts[f"Ses0{s}"][c] == 2 * PER_CLASS
            assert summary.scripted_counts[f"Ses0{s}"][c] == 2
        # quirks, in improvised dialogs only: per speaker xxx + fru (F) / oth (M)
        assert (impro[s, "xxx"], impro[s, "fru"], impro[s, "oth"]) == (2, 1, 1)
    per_speaker = Counter((s, g, raw) for s, _, g, raw, imp in labels if imp)
    assert all(per_speaker[s, g, "exc"] == PER_CLASS // 3 for s in range(1, 6) for g in "FM")
    assert summary.total == 40 * PER_CLASS
    assert summary.n_wavs == 40 * (PER_CLASS + 1) + 25
    # an id with a wav but no label line, once per session
    unlabelled = list(root.glob("Session*/sentences/wav/*/*XX0.wav"))
    assert len(unlabelled) == 5
    assert not {p.stem for p in unlabelled} & {uid for _, uid, *_ in labels}


def test_the_iemocap_loader_reads_it_unchanged(corpus):
    root, _ = corpus
    satn = load_iemocap(root, protocol="satn")
    assert not satn.problems
    by_speaker = Counter((u.speaker, u.label) for u in satn.utterances)
    assert len(by_speaker) == 10 * 4 and set(by_speaker.values()) == {PER_CLASS}
    assert all(u.transcript for u in satn.utterances)
    full = load_iemocap(root, protocol="full")
    assert len(full.utterances) == 40 * (PER_CLASS + 1)


def test_without_quirks_only_the_four_classes(tmp_path):
    s = write_demo_corpus(
        tmp_path, per_class=1, scripted_per_class=0, quirks=False, backend="formant"
    )
    labels = _labels(tmp_path)
    assert Counter(raw for *_, raw, _ in labels) == {"neu": 10, "hap": 10, "sad": 10, "ang": 10}
    assert s.n_wavs == 40 == len(list(tmp_path.glob("Session*/sentences/wav/*/*.wav")))
    for f in tmp_path.glob("Session*/dialog/transcriptions/*.txt"):
        assert all(TRANSCRIPT_LINE.fullmatch(x) for x in f.read_text().splitlines())


# ---------------------------------------------------------------- emotion cues


def test_emotion_cues_are_in_the_audio(corpus):
    root, _ = corpus
    level = defaultdict(list)
    f0 = defaultdict(list)
    for u in load_iemocap(root, protocol="full").utterances:
        x = _wav(Path(u.path))
        level[u.speaker, u.label].append(10 * np.log10(np.mean(x**2)))
        f0[u.speaker, u.label].append(_f0(x))
    speakers = {spk for spk, _ in level}
    assert len(speakers) == 10
    for spk in speakers:
        mean = {c: np.mean(level[spk, c]) for c in ("neu", "hap", "sad", "ang")}
        pitch = {c: np.median(f0[spk, c]) for c in ("neu", "hap", "sad", "ang")}
        # angry and happy are louder than sad (neutral sits between and may overlap)
        assert min(mean["ang"], mean["hap"]) > mean["sad"] + 3, (spk, mean)
        assert min(pitch["hap"], pitch["ang"]) > 1.05 * pitch["sad"], (spk, pitch)
        expected = (150, 400) if spk.endswith("F") else (70, 220)
        assert expected[0] < pitch["neu"] < expected[1], (spk, pitch)


@pytest.mark.parametrize("backend", ["formant", "espeak"])
def test_render_is_pure_and_follows_the_text(backend):
    _need(backend)
    rng = np.random.default_rng(1)
    voice_f = synth.draw_voice("F", "f2", rng)
    voice_m = synth.draw_voice("M", "m3", rng)
    prosody = synth.draw_prosody("neu", rng)
    long_text = "We have to leave in twenty minutes, the train was late again."
    with synth.open_backend(backend) as b:
        first = synth.render(long_text, voice_f, prosody, 7, b)
        other = synth.render(long_text, voice_m, prosody, 7, b)  # state in between
        again = synth.render(long_text, voice_f, prosody, 7, b)
        short = synth.render("Yes.", voice_f, prosody, 7, b)
    assert first.dtype == np.float32 and np.array_equal(first, again)
    assert not np.array_equal(first[: len(other)], other[: len(first)])
    assert len(short) < 0.6 * len(first)


# ---------------------------------------------------------------- determinism


@pytest.mark.parametrize("backend", ["formant", "espeak"])
def test_same_seed_same_bytes_other_seed_other_audio(tmp_path, backend):
    _need(backend)
    kw = dict(per_class=1, scripted_per_class=0, backend=backend)
    write_demo_corpus(tmp_path / "a", seed=3, **kw)
    write_demo_corpus(tmp_path / "b", seed=3, **kw)
    write_demo_corpus(tmp_path / "c", seed=4, **kw)
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert a == b
    wav = next(k for k in a if k.endswith(".wav") and k in c)
    assert a[wav] != c[wav]
    assert {k: v for k, v in a.items() if k.endswith(".txt")} != {
        k: v for k, v in c.items() if k.endswith(".txt")
    }


# ---------------------------------------------------------------- the target folder


def test_refuses_a_non_empty_folder_that_is_no_demo_corpus(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a satn demo corpus"):
        write_demo_corpus(tmp_path, per_class=1, backend="formant")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    with pytest.raises(ConfigError, match="is a file"):
        write_demo_corpus(tmp_path / "notes.txt", per_class=1, backend="formant")


def test_reuses_a_complete_corpus_and_replaces_one_with_other_parameters(tmp_path):
    kw = dict(scripted_per_class=0, backend="formant")
    first = write_demo_corpus(tmp_path, per_class=2, **kw)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    again = write_demo_corpus(tmp_path, per_class=2, **kw)
    assert (first.reused, again.reused) == (False, True)
    assert again.counts == first.counts and again.n_wavs == first.n_wavs
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == stamps
    auto = write_demo_corpus(tmp_path, per_class=2, scripted_per_class=0, backend="auto")
    assert auto.reused and auto.backend == "formant"  # auto takes a corpus made by either
    smaller = write_demo_corpus(tmp_path, per_class=1, **kw)
    assert not smaller.reused and smaller.total == 40
    assert len(list(tmp_path.glob("Session*/sentences/wav/*/*.wav"))) == smaller.n_wavs
    assert json.loads((tmp_path / MARKER).read_text())["params"]["per_class"] == 1


def test_an_unfinished_corpus_is_written_again(tmp_path):
    kw = dict(per_class=1, scripted_per_class=0, backend="formant")
    write_demo_corpus(tmp_path, **kw)
    marker = json.loads((tmp_path / MARKER).read_text())
    (tmp_path / MARKER).write_text(json.dumps({**marker, "complete": False}))
    next(tmp_path.glob("Session3/sentences/wav/*/*.wav")).unlink()
    s = write_demo_corpus(tmp_path, **kw)
    assert not s.reused
    assert len(list(tmp_path.glob("Session*/sentences/wav/*/*.wav"))) == s.n_wavs


def test_auto_falls_back_to_formant_without_espeak(tmp_path, monkeypatch):
    monkeypatch.setattr(synth, "_espeak_probe", lambda: "libespeak-ng not installed (test)")
    s = write_demo_corpus(tmp_path / "a", per_class=1, scripted_per_class=0, backend="auto")
    assert s.backend == "formant" and s.n_wavs == 40 + 25
    with pytest.raises(ConfigError, match="not installed"):
        write_demo_corpus(tmp_path / "b", per_class=1, backend="espeak")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    "kw", [dict(per_class=0), dict(seed=-1), dict(scripted_per_class=-1), dict(backend="nope")]
)
def test_bad_arguments(tmp_path, kw):
    with pytest.raises(ConfigError):
        write_demo_corpus(tmp_path, **kw)
    assert not any(tmp_path.iterdir())
