"""read_audio: mono float32 at the target rate, and one AudioError per kind of bad file."""

import numpy as np
import pytest
import soundfile as sf

from satn.audio import AudioError, read_audio


def tone(sr: int, seconds: float = 0.5, hz: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / sr)[spec.argmax()])


def test_reads_16k_wav_unchanged(tmp_path):
    x = tone(16000)
    path = tmp_path / "a.wav"
    sf.write(path, x, 16000, subtype="PCM_16")
    y = read_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1 and y.shape == x.shape
    assert np.abs(y - x).max() < 1 / 2**15 + 1e-6  # 16-bit quantisation only


def test_reads_flac_and_str_path(tmp_path):
    x = tone(16000)
    path = tmp_path / "a.flac"
    sf.write(path, x, 16000)
    y = read_audio(str(path))
    assert y.shape == x.shape and np.abs(y - x).max() < 1e-4


def test_stereo_is_averaged_to_mono(tmp_path):
    left, right = tone(16000, hz=300), tone(16000, hz=1000, amp=0.2)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    y = read_audio(path)
    assert y.ndim == 1
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("sr", [48000, 22050, 8000])
def test_resamples_to_target_rate(tmp_path, sr):
    seconds, hz = 0.5, 440.0
    path = tmp_path / f"r{sr}.wav"
    sf.write(path, tone(sr, seconds, hz), sr, subtype="FLOAT")
    y = read_audio(path, sample_rate=16000)
    assert y.dtype == np.float32
    assert abs(y.size - seconds * 16000) <= 1
    assert abs(peak_hz(y, 16000) - hz) <= 2.0  # bin width 2 Hz
    # amplitude kept away from the filter's edges
    assert np.abs(y[2000:-2000]).max() == pytest.approx(0.5, abs=0.01)


def test_resample_to_other_target(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, tone(16000, 1.0, 440.0), 16000)
    y = read_audio(path, sample_rate=8000)
    assert abs(y.size - 8000) <= 1 and abs(peak_hz(y, 8000) - 440.0) <= 1.0


def test_missing_file(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match="file not found") as e:
        read_audio(path)
    assert e.value.path == str(path) and str(path) in str(e.value)
    assert isinstance(e.value, ValueError)


def test_directory_is_not_audio(tmp_path):
    with pytest.raises(AudioError, match="not a file"):
        read_audio(tmp_path)


def test_corrupt_bytes(tmp_path):
    path = tmp_path / "bad.wav"
    path.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(AudioError, match="cannot decode") as e:
        read_audio(path)
    assert str(path) in str(e.value)


def test_truncated_header(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, tone(16000), 16000)
    path = tmp_path / "cut.wav"
    path.write_bytes(good.read_bytes()[:20])  # inside the RIFF header
    with pytest.raises(AudioError, match="cannot decode"):
        read_audio(path)


def test_empty_audio(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="no audio samples"):
        read_audio(path)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "zero.flac"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty file \(0 bytes\)"):
        read_audio(path)


def test_a_file_that_cannot_be_opened_says_why(tmp_path, monkeypatch):
    path = tmp_path / "locked.wav"
    sf.write(path, tone(1600), 16000)

    def deny(*args, **kwargs):  # root reads any file, so the denial is simulated
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("builtins.open", deny)
    with pytest.raises(AudioError, match=r"locked.wav: cannot open \(Permission denied\)"):
        read_audio(path)


def test_a_damaged_sample_rate_is_refused_before_resampling(tmp_path):
    path = tmp_path / "rate.wav"
    sf.write(path, tone(100), 16000)
    raw = bytearray(path.read_bytes())
    raw[24:28] = (1).to_bytes(4, "little")  # the WAV header's sample rate field
    path.write_bytes(bytes(raw))
    with pytest.raises(AudioError, match="implausible sample rate 1 Hz"):
        read_audio(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path, bad):
    x = tone(16000)
    x[100] = bad
    x[200] = bad
    path = tmp_path / "nan.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="2 non-finite sample"):
        read_audio(path)
