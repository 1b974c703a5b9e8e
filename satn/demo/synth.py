"""Emotional speech synthesis for the demo corpus: text + voice + emotion -> 16 kHz waveform.

Two backends speak the text; a shared post-processing chain adds the emotion's voice
quality, level, padding and a noise floor:

- ``espeak``: libespeak-ng (GPL-3.0, the optional extra ``satn[speech]``, package
  ``espeakng-loader``), loaded at run time through ctypes in a small worker process.
  Real words, at 22.05 kHz, resampled to 16 kHz.
- ``formant``: satn's own source-filter synthesiser (numpy/scipy only): letters become
  vowel / consonant segments with formant targets and noise bursts, voiced by a glottal
  pulse train that follows the emotion's F0 contour, with jitter and shimmer.

The emotion cues live in :data:`STYLES` (pitch level and range, tempo, level, tension,
breathiness); :func:`draw_prosody` scales a style by a random intensity and adds
per-utterance noise so that classes overlap. Every waveform is a pure function of
(text, voice, prosody, seed, backend): no state carries from one utterance to the next
(for espeak this needs ``os.fork``, i.e. POSIX; see the worker below).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import queue
import re
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.ndimage import uniform_filter1d

from satn.config import ConfigError

SAMPLE_RATE = 16000
BACKENDS = ("espeak", "formant")

REF_DBFS = -26.0  # active-speech RMS of a neutral utterance at speaker gain 0
NOISE_DBFS = -60.0  # room noise floor under and around the speech
NOMINAL_F0 = {"F": 190.0, "M": 108.0}  # Hz; a voice's ``pitch`` is a factor on this
VARIANTS = {"F": ("f1", "f2", "f3", "f4", "f5"), "M": ("m1", "m2", "m3", "m4", "m6")}


class BackendUnavailable(RuntimeError):
    """A synthesis backend cannot run here (library missing or failing to initialise)."""


# ---------------------------------------------------------------- voices and emotions


@dataclass(frozen=True)
class Voice:
    """One speaker's neutral voice."""

    gender: str  # "F" | "M"
    variant: str  # espeak voice variant (f1..f5, m1..m6)
    pitch: float  # neutral F0 as a factor on NOMINAL_F0[gender]
    formant_scale: float  # vocal-tract size: factor on formant frequencies (~0.94..1.06)
    rate: float  # speaking rate factor
    gain_db: float  # speaker level re REF_DBFS


@dataclass(frozen=True)
class Style:
    """How an emotion moves a voice away from neutral (at full intensity)."""

    pitch: float  # F0 level factor
    range: float  # F0 excursion factor
    rate: float  # tempo factor
    gain_db: float  # level change
    tension: float  # 0..1 pressed voice: bright spectrum, saturation, short open phase
    breath: float  # 0..1 breathy voice: aspiration noise, dark spectrum, long open phase


# ang: loud, high, wide, fast, tense. hap: high, wide, fast-ish, a little bright.
# sad: low, narrow, slow, quiet, breathy. neu: the speaker's own voice.
STYLES: dict[str, Style] = {
    "neu": Style(pitch=1.00, range=1.0, rate=1.00, gain_db=0.0, tension=0.0, breath=0.0),
    "hap": Style(pitch=1.22, range=1.6, rate=1.10, gain_db=3.0, tension=0.25, breath=0.0),
    "sad": Style(pitch=0.86, range=0.5, rate=0.80, gain_db=-6.0, tension=0.0, breath=0.7),
    "ang": Style(pitch=1.25, range=1.5, rate=1.18, gain_db=7.0, tension=0.8, breath=0.0),
}


@dataclass(frozen=True)
class Prosody:
    """One utterance's rendering of an emotion: factors re the speaker's neutral voice."""

    emotion: str
    intensity: float  # 0.5..1: how far from neutral towards the full style
    pitch: float
    range: float
    rate: float
    gain_db: float
    tension: float
    breath: float
    jitter: float  # relative period-to-period F0 perturbation (formant backend)
    shimmer: float  # relative period-to-period amplitude perturbation (formant backend)


@functools.cache
def _signal():
    """scipy.signal, imported when a corpus is written: importing it takes over a second,
    which every command that only finds the corpus already on disk would pay."""
    from scipy import signal

    return signal


def draw_voice(gender: str, variant: str, rng: np.random.Generator) -> Voice:
    """A random speaker of ``gender``; the spread makes speakers audibly distinct."""
    return Voice(
        gender=gender,
        variant=variant,
        pitch=float(rng.uniform(0.88, 1.14)),
        formant_scale=float(rng.uniform(0.94, 1.06)),
        rate=float(rng.uniform(0.92, 1.08)),
        gain_db=float(rng.uniform(-2.0, 2.0)),
    )


def draw_prosody(emotion: str, rng: np.random.Generator) -> Prosody:
    """Scale ``STYLES[emotion]`` by a random intensity and add per-utterance noise.

    Intensity in [0.5, 1] moves each cue part of the way from neutral, and the noise
    (about 6 % on pitch and tempo, 15 % on range, 2 dB on level) lets neighbouring classes
    overlap: learnable, not trivially separable.
    """
    s = STYLES[emotion]
    k = float(rng.uniform(0.5, 1.0))

    def towards(factor: float, sd: float) -> float:
        return float(np.exp(k * np.log(factor) + rng.normal(0.0, sd)))

    tension = float(np.clip(k * s.tension + rng.normal(0.0, 0.08), 0.0, 1.0))
    breath = float(np.clip(k * s.breath + rng.normal(0.0, 0.08), 0.0, 1.0))
    return Prosody(
        emotion=emotion,
        intensity=k,
        pitch=towards(s.pitch, 0.06),
        range=towards(s.range, 0.15),
        rate=towards(s.rate, 0.06),
        gain_db=float(k * s.gain_db + rng.normal(0.0, 2.0)),
        tension=tension,
        breath=breath,
        jitter=0.006 + 0.012 * breath + 0.008 * tension,
        shimmer=0.03 + 0.06 * breath + 0.04 * tension,
    )


# ---------------------------------------------------------------- backends


class Backend(Protocol):
    """Speaks text in a voice: -> (n,) float64 at SAMPLE_RATE, any level, may hold silence."""

    name: str

    def speak(
        self, text: str, voice: Voice, prosody: Prosody, rng: np.random.Generator
    ) -> np.ndarray: ...


def render(text: str, voice: Voice, prosody: Prosody, seed: int, backend: Backend) -> np.ndarray:
    """One utterance: (n,) float32 in [-1, 1] at 16 kHz, with padding and a noise floor.

    Deterministic in its arguments: ``seed`` drives every random choice after the
    backend's choice of words and sounds.
    """
    rng = np.random.default_rng(seed)
    x = backend.speak(text, voice, prosody, rng)
    x = _trim(x)
    x = _voice_quality(x, prosody, rng)
    return _finish(x, voice, prosody, rng)


@contextlib.contextmanager
def open_backend(name: str = "auto", workers: int = 2) -> Iterator[Backend]:
    """A ready backend, closed on exit; ``auto`` is espeak when it runs here, else formant.

    Raises :class:`ConfigError` for an unknown name and :class:`BackendUnavailable` when
    ``espeak`` is asked for and cannot run.
    """
    if resolve_backend(name) == "formant":
        yield FormantBackend()
        return
    backend = EspeakBackend(workers=workers)
    try:
        yield backend
    finally:
        backend.close()


def resolve_backend(name: str = "auto") -> str:
    """The backend ``open_backend(name)`` would give, by name."""
    if name not in ("auto", *BACKENDS):
        raise ConfigError(f"unknown synthesis backend {name!r}; known: auto, {', '.join(BACKENDS)}")
    if name == "auto":
        return "espeak" if espeak_available() else "formant"
    if name == "espeak" and not espeak_available():
        raise BackendUnavailable(espeak_problem() or "libespeak-ng is not available")
    return name


# ---------------------------------------------------------------- post-processing


@functools.cache
def _sos(kind: str, freqs: tuple[float, ...], order: int = 2) -> np.ndarray:
    """Butterworth sections, designed once per (kind, band)."""
    wn = freqs[0] if len(freqs) == 1 else list(freqs)
    return _signal().butter(order, wn, btype=kind, fs=SAMPLE_RATE, output="sos")


def _frame_energy(x: np.ndarray, frame: int = 320) -> np.ndarray:
    """Mean square per 20 ms frame: (n_frames,)."""
    n = len(x) // frame
    if n == 0:
        return np.array([float(np.mean(x**2))]) if len(x) else np.zeros(1)
    return np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1)


def _active_rms(x: np.ndarray) -> float:
    """RMS over frames within 40 dB of the loudest: the level of the speech itself."""
    e = _frame_energy(x)
    active = e[e > e.max() * 1e-4]
    return float(np.sqrt(active.mean())) if active.size else 0.0


def _trim(x: np.ndarray) -> np.ndarray:
    """Drop leading / trailing near-silence (< -50 dB re peak), keeping 10 ms margins."""
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak == 0.0:
        return x
    loud = np.flatnonzero(np.abs(x) > peak * 10 ** (-50 / 20))
    margin = SAMPLE_RATE // 100
    return x[max(0, loud[0] - margin) : loud[-1] + margin]


def _voice_quality(x: np.ndarray, prosody: Prosody, rng: np.random.Generator) -> np.ndarray:
    """Tension brightens and saturates; breath darkens and adds envelope-following noise."""
    x = np.asarray(x, dtype=np.float64)
    if prosody.tension > 0:
        x = x + 1.5 * prosody.tension * _signal().sosfilt(_sos("highpass", (1500.0,)), x)
    peak = float(np.max(np.abs(x))) or 1.0
    x = x / peak
    drive = 1.0 + 5.0 * prosody.tension  # a pressed voice: flattened peaks, extra harmonics
    x = np.tanh(drive * x) / np.tanh(drive)
    b = prosody.breath
    if b > 0:
        dark = _signal().sosfilt(_sos("lowpass", (2500.0,)), x)
        x = (1 - 0.7 * b) * x + 0.7 * b * dark
        env = uniform_filter1d(np.abs(x), size=SAMPLE_RATE // 50)
        noise = _signal().sosfilt(_sos("bandpass", (1000.0, 6000.0)), rng.standard_normal(len(x)))
        noise *= env / (np.sqrt(np.mean((noise * env) ** 2)) + 1e-12)
        x = x + 0.45 * b * _active_rms(x) * noise
    return x


def _finish(x: np.ndarray, voice: Voice, prosody: Prosody, rng: np.random.Generator) -> np.ndarray:
    """Set the level, pad with 0.1-0.3 s each side, add the noise floor, soft-limit."""
    rms = _active_rms(x)
    target = 10 ** ((REF_DBFS + voice.gain_db + prosody.gain_db) / 20)
    x = x * (target / rms) if rms > 0 else x
    lead, tail = (int(rng.uniform(0.1, 0.3) * SAMPLE_RATE) for _ in range(2))
    y = np.concatenate([np.zeros(lead), x, np.zeros(tail)])
    floor = _signal().sosfilt(_sos("lowpass", (3000.0,)), rng.standard_normal(len(y)))
    floor *= 10 ** ((NOISE_DBFS + rng.uniform(-4, 4)) / 20) / (np.std(floor) + 1e-12)
    y = 0.98 * np.tanh((y + floor) / 0.98)  # no clipping, and no change below -20 dBFS
    return y.astype(np.float32)


# ---------------------------------------------------------------- the formant backend

# (F1, F2, F3) in Hz for an adult male vocal tract; scaled per speaker.
_VOWELS: dict[str, tuple[float, float, float]] = {
    "a": (730, 1240, 2440), "e": (530, 1840, 2480), "i": (390, 1990, 2550),
    "o": (570, 840, 2410), "u": (440, 1020, 2240), "y": (390, 1990, 2550),
    "ee": (270, 2290, 3010), "ea": (270, 2290, 3010), "ie": (660, 1700, 2500),
    "oo": (300, 870, 2240), "ou": (640, 1190, 2390), "ow": (640, 1190, 2390),
    "ai": (480, 1900, 2500), "ay": (480, 1900, 2500), "ei": (480, 1900, 2500),
    "oa": (500, 900, 2400), "oi": (570, 1300, 2400), "oy": (570, 1300, 2400),
    "au": (600, 950, 2400), "aw": (600, 950, 2400), "er": (490, 1350, 1690),
    "ir": (490, 1350, 1690), "ur": (490, 1350, 1690),
}  # fmt: skip

# kind: B voiced stop, P voiceless stop, F voiceless fricative, Z voiced fricative,
# N nasal, S sonorant, H aspirate. Formants are loci; band is the noise band (Hz).
_CONSONANTS: dict[str, tuple[str, tuple[float, float, float], float, tuple[float, float]]] = {
    "b": ("B", (200, 900, 2200), 60, (300, 1500)),
    "d": ("B", (200, 1700, 2600), 60, (2000, 5000)),
    "g": ("B", (200, 1500, 2300), 65, (1200, 3000)),
    "p": ("P", (200, 900, 2200), 75, (300, 1500)),
    "t": ("P", (200, 1700, 2600), 75, (2500, 6000)),
    "k": ("P", (200, 1500, 2300), 80, (1200, 3500)),
    "f": ("F", (300, 1400, 2400), 95, (1200, 7000)),
    "th": ("F", (300, 1500, 2500), 90, (1500, 7000)),
    "s": ("F", (300, 1600, 2600), 100, (3800, 7500)),
    "sh": ("F", (300, 1800, 2500), 100, (2000, 5500)),
    "h": ("H", (500, 1500, 2500), 60, (500, 6000)),
    "v": ("Z", (300, 1400, 2400), 70, (1200, 6000)),
    "z": ("Z", (300, 1600, 2600), 80, (3800, 7500)),
    "j": ("Z", (300, 1900, 2600), 80, (2000, 5500)),
    "m": ("N", (280, 1000, 2200), 70, (0, 0)),
    "n": ("N", (280, 1600, 2600), 65, (0, 0)),
    "ng": ("N", (280, 2000, 2600), 70, (0, 0)),
    "l": ("S", (360, 1300, 2800), 65, (0, 0)),
    "r": ("S", (420, 1300, 1600), 65, (0, 0)),
    "w": ("S", (300, 610, 2200), 60, (0, 0)),
    "yy": ("S", (280, 2250, 3000), 55, (0, 0)),
}
# letter groups spelled differently from the table keys
_SPELLING = {"ph": ["f"], "ck": ["k"], "wh": ["w"], "ch": ["t", "sh"], "x": ["k", "s"],
             "q": ["k"], "c": ["k"], "gh": [], "tion": ["sh", "u", "n"]}  # fmt: skip
_DIGITS = "zero one two three four five six seven eight nine".split()
_VOICING = {
    "V": 1.0,
    "S": 0.6,
    "N": 0.35,
    "Z": 0.5,
    "B": 0.0,
    "P": 0.0,
    "F": 0.0,
    "H": 0.0,
    "_": 0.0,
}


@dataclass(frozen=True)
class _Seg:
    """One segment of the crude letter-to-sound plan."""

    kind: str  # V S N Z B P F H (see _CONSONANTS) or "_" for a pause
    formants: tuple[float, float, float]
    ms: float
    band: tuple[float, float] = (0.0, 0.0)
    word: int = -1  # index of the word it belongs to (pauses: -1)
    stressed: bool = False


def _letters_to_segments(text: str) -> tuple[list[_Seg], bool]:
    """Text -> segments, and whether it ends as a question. Crude but word-shaped."""
    text = re.sub(r"\d", lambda m: f" {_DIGITS[int(m.group())]} ", text.lower())
    segs: list[_Seg] = []
    tokens = re.findall(r"[a-z']+|[,.;:!?]", text)
    question = text.rstrip().endswith("?")
    word = 0
    for tok in tokens:
        if not tok[0].isalpha():
            if tok != "," or not segs:
                continue
            segs.append(_Seg("_", (500, 1500, 2500), 200))
            continue
        w = tok.replace("'", "")
        if len(w) > 2 and w.endswith("e") and w[-2] not in "aeiouy":
            w = w[:-1]  # silent final e
        i, seen_vowel, word_segs = 0, False, []
        while i < len(w):
            piece = _next_piece(w, i)
            i += len(piece)
            if piece == "y" and not word_segs:
                piece = "yy"  # consonantal y at the start of a word
            if piece == "c" and i < len(w) and w[i] in "eiy":
                piece = "s"
            if piece in _VOWELS:
                long = len(piece) > 1
                word_segs.append(_Seg("V", _VOWELS[piece], 100 if long else 75, word=word,
                                      stressed=not seen_vowel))  # fmt: skip
                seen_vowel = True
                continue
            for c in _SPELLING.get(piece, [piece]):
                if c in _VOWELS:
                    word_segs.append(_Seg("V", _VOWELS[c], 80, word=word))
                elif c in _CONSONANTS:
                    kind, f, ms, band = _CONSONANTS[c]
                    if word_segs and word_segs[-1].kind == kind and word_segs[-1].band == band:
                        continue  # doubled letters are one sound
                    word_segs.append(_Seg(kind, f, ms, band, word=word))
        if not any(s.kind == "V" for s in word_segs):
            word_segs.append(_Seg("V", _VOWELS["u"], 70, word=word, stressed=True))
        segs.extend(word_segs)
        segs.append(_Seg("_", (500, 1500, 2500), 25))
        word += 1
    while segs and segs[-1].kind == "_":
        segs.pop()
    return segs, question


def _next_piece(word: str, i: int) -> str:
    """The longest spelling unit at ``word[i:]`` that the tables know (4, 2 or 1 letters)."""
    for n in (4, 2):
        piece = word[i : i + n]
        if len(piece) == n and (piece in _VOWELS or piece in _SPELLING or piece in _CONSONANTS):
            return piece
    return word[i]


def _cascade_response(freqs: np.ndarray, bw: np.ndarray, nfft: int) -> np.ndarray:
    """Frequency response of cascaded 2-pole resonators, unit gain at DC.

    freqs: (T, K) centre frequencies in Hz; bw: (K,) bandwidths in Hz.
    -> (T, nfft // 2 + 1) complex. The denominators are multiplied out into one
    polynomial per frame and evaluated on the unit circle by a single batched FFT.
    """
    r = np.exp(-np.pi * bw / SAMPLE_RATE)  # pole radius from bandwidth
    a1 = -2 * r * np.cos(2 * np.pi * np.minimum(freqs, 0.45 * SAMPLE_RATE) / SAMPLE_RATE)
    a2 = np.broadcast_to(r**2, a1.shape)
    poly = np.zeros((len(freqs), 2 * freqs.shape[1] + 1))
    poly[:, 0] = 1.0
    for k in range(freqs.shape[1]):  # poly *= (1 + a1 z^-1 + a2 z^-2)
        top = 2 * k
        prev = poly[:, : top + 1].copy()
        poly[:, 1 : top + 2] += a1[:, k : k + 1] * prev
        poly[:, 2 : top + 3] += a2[:, k : k + 1] * prev
    gain = np.prod(1 + a1 + a2, axis=1, keepdims=True)
    return gain / np.fft.rfft(poly, nfft)


class FormantBackend:
    """satn's own source-filter synthesiser: no external library, crude speech content."""

    name = "formant"

    def speak(
        self, text: str, voice: Voice, prosody: Prosody, rng: np.random.Generator
    ) -> np.ndarray:
        segs, question = _letters_to_segments(text)
        if not segs:
            segs = [_Seg("V", _VOWELS["u"], 150, word=0, stressed=True)]
        sr = SAMPLE_RATE
        rate = voice.rate * prosody.rate
        n_words = max(s.word for s in segs) + 1
        # consonant table durations are for careful speech; 0.8 gives a conversational pace
        ms = np.array(
            [s.ms * (1.35 if s.stressed else 1.0 if s.kind in "V_" else 0.8) for s in segs]
        )
        ms *= np.where([s.word == n_words - 1 for s in segs], 1.25, 1.0)  # final lengthening
        lengths = np.maximum(1, (ms / 1000 / rate * rng.uniform(0.85, 1.15, len(segs)) * sr))
        lengths = lengths.astype(int)
        starts = np.concatenate([[0], np.cumsum(lengths)])
        n = int(starts[-1])
        idx = np.repeat(np.arange(len(segs)), lengths)
        rel = (np.arange(n) - starts[idx]) / lengths[idx]  # position within its segment, 0..1
        kinds = np.array([s.kind for s in segs])[idx]

        # formant tracks: targets per segment (h and stop closures take the next vowel's),
        # smoothed over 25 ms so that transitions glide
        targets = np.array([s.formants for s in segs], dtype=float)
        for i, s in enumerate(segs):
            if s.kind in "HBP" and i + 1 < len(segs) and segs[i + 1].kind == "V":
                targets[i] = 0.5 * (targets[i] + targets[i + 1])
        scale = (1.17 if voice.gender == "F" else 1.0) * voice.formant_scale
        ms_idx = idx[:: sr // 1000]  # tracks on a 1 ms grid: formants move slowly
        tracks = uniform_filter1d(targets[ms_idx] * scale, size=25, axis=0, mode="nearest")

        # F0: declination, a rise-fall accent on each word's stressed vowel, a final fall
        # (statement) or rise (question), a slow wander; semitones re the speaker's level
        st = np.linspace(1.0, -1.5, n) * prosody.range
        for i, s in enumerate(segs):
            if s.stressed:
                width = 2 * lengths[i]
                c = starts[i] + lengths[i] // 2
                a, b = max(0, c - width), min(n, c + width)
                accent = 3.0 * prosody.range * rng.uniform(0.4, 1.2)
                st[a:b] += accent * np.hanning(b - a)
        last = segs[-1].word
        tail = int(starts[[i for i, s in enumerate(segs) if s.word == last][0]])
        ramp = np.linspace(0, 1, n - tail)
        st[tail:] += (4.0 if question else -2.5) * prosody.range * ramp
        st += uniform_filter1d(rng.standard_normal(n // 160 + 1), 5).repeat(160)[:n] * 0.8
        f0 = NOMINAL_F0[voice.gender] * voice.pitch * prosody.pitch * 2 ** (st / 12)
        per = rng.standard_normal(n // 64 + 1).repeat(64)[:n]  # ~one value per period
        f0 *= 1 + prosody.jitter * per
        phase = np.cumsum(f0 / sr)
        frac = phase - np.floor(phase)

        # Rosenberg glottal flow; its derivative excites the tract (lip radiation included)
        oq = float(np.clip(0.6 + 0.2 * prosody.breath - 0.25 * prosody.tension, 0.3, 0.85))
        tp = 0.6 * oq
        flow = np.where(
            frac < tp,
            0.5 * (1 - np.cos(np.pi * frac / tp)),
            np.where(frac < oq, np.cos(0.5 * np.pi * (frac - tp) / (oq - tp)), 0.0),
        )
        source = np.diff(flow, prepend=0.0)
        shimmer = 1 + prosody.shimmer * rng.standard_normal(n // 64 + 1).repeat(64)[:n]
        voicing = np.array([_VOICING[s.kind] for s in segs])[idx]
        # voiced stops: a weak voice bar in the closure; all stops: silent otherwise
        voicing = np.where((kinds == "B") & (rel < 0.7), 0.15, voicing)
        voicing = uniform_filter1d(voicing, size=sr // 125)
        aspiration = np.where(kinds == "H", 0.25, 0.0)
        aspiration = np.where((kinds == "P") & (rel > 0.8), 0.2, aspiration)
        # the absolute scale is arbitrary (render() sets the level); 30 keeps the pulses
        # (derivatives of a 0..1 flow) above the aspiration and frication noise
        excitation = source * shimmer * voicing * 30 + aspiration * rng.standard_normal(n) * 0.05

        bandwidths = np.array([60.0 * (1 + prosody.breath), 90.0, 150.0, 200.0, 300.0])
        fixed = np.array([3300.0, 4200.0]) * scale
        y = self._tract(excitation, tracks, fixed, bandwidths)

        # frication and bursts: band-passed noise per segment, added after the tract
        for i, s in enumerate(segs):
            if s.kind not in "FZBP":
                continue
            a, b = int(starts[i]), int(starts[i + 1])
            if s.kind in "BP":
                a = a + int(0.7 * (b - a))  # burst after the closure
                gain = 0.12
            else:
                gain = 0.05 if s.kind == "F" else 0.03
            noise = _signal().sosfilt(_sos("bandpass", s.band), rng.standard_normal(b - a))
            y[a:b] += gain * noise * np.hanning(b - a)
        return y

    def _tract(
        self, x: np.ndarray, tracks: np.ndarray, fixed: np.ndarray, bw: np.ndarray
    ) -> np.ndarray:
        """Filter ``x`` through 5 cascaded formant resonators that move over time.

        x: (n,) excitation; tracks: (ceil(n / 16), 3) F1-F3 in Hz every 1 ms; fixed: (2,)
        F4, F5; bw: (5,) Hz.
        Short-time filtering: 32 ms Hann frames every 16 ms, each multiplied in a 64 ms
        FFT by the cascade's frequency response at the frame centre, then overlap-added
        (the resonators' impulse responses die out well within the zero padding).
        """
        win, hop, nfft = 512, 256, 1024
        n = len(x)
        padded = np.concatenate([np.zeros(win), x, np.zeros(win + hop)])
        frames = np.lib.stride_tricks.sliding_window_view(padded, win)[::hop]  # (T, win)
        hann = _signal().get_window("hann", win).astype(np.float32)
        spec = np.fft.rfft(frames.astype(np.float32) * hann, nfft)  # (T, nfft/2+1) complex64
        centre = np.clip(np.arange(len(frames)) * hop + win // 2 - win, 0, n - 1)
        at = tracks[centre // (SAMPLE_RATE // 1000)]
        freqs = np.concatenate([at, np.broadcast_to(fixed, (len(centre), 2))], 1)
        response = _cascade_response(freqs, bw, nfft).astype(np.complex64)  # (T, nfft/2+1)
        out_frames = np.fft.irfft(spec * response, nfft)  # (T, nfft)
        y = np.zeros(len(frames) * hop + nfft)
        for j in range(nfft // hop):  # overlap-add, one hop-sized slice of every frame at once
            y[j * hop : j * hop + len(frames) * hop] += out_frames[
                :, j * hop : (j + 1) * hop
            ].ravel()
        return y[win : win + n]  # periodic Hann frames at half-overlap sum to 1


# ---------------------------------------------------------------- the espeak backend

# The worker runs in its own small process (ctypes and the standard library only). The
# library keeps state from one utterance to the next (a pitch-flutter phase, a gain
# control, leftovers of the voice loaded before), so no utterance is spoken in a process
# that spoke before: the worker initialises espeak and forks, per voice, a process that
# loads that voice and nothing else; that one forks a fresh child per utterance. So every
# waveform is a pure function of its request, in any order and with any number of
# workers. Without os.fork (Windows) one process speaks everything, in request order.
# Protocol: a JSON request per line on stdin; on stdout an int32 sample count (-1: error)
# then that many int16 samples. The first int32 is the sample rate, or -1 followed by
# the reason espeak cannot run.
_WORKER = r"""
import ctypes, json, os, struct, sys
from pathlib import Path

def main():
    out = sys.stdout.buffer
    try:
        import espeakng_loader
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data = str(Path(espeakng_loader.get_data_path()).parent).encode()
    except Exception as e:  # the reason follows the -1
        out.write(struct.pack("<i", -1) + f"{type(e).__name__}: {e}".encode()); out.flush()
        return
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    # AUDIO_OUTPUT_SYNCHRONOUS = 2; espeakINITIALIZE_DONT_EXIT = 0x8000
    rate = lib.espeak_Initialize(2, 0, data, 0x8000)
    if rate <= 0:
        out.write(struct.pack("<i", -1) + b"espeak_Initialize failed"); out.flush()
        return
    out.write(struct.pack("<i", rate)); out.flush()
    chunks = []
    CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                ctypes.c_void_p)
    def collect(wav, n, events):
        if wav and n > 0:
            chunks.append(ctypes.string_at(wav, 2 * n))
        return 0
    callback = CALLBACK(collect)
    lib.espeak_SetSynthCallback(callback)
    # espeak seeds its random numbers from the clock when it initialises (breathy and
    # rough voices draw on them): reseed per request, with the library's call where it
    # has one and with libc's srand()
    seeders = []
    try:
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        seeders.append(lib.espeak_ng_SetRandSeed)
    except AttributeError:
        pass
    try:
        libc_srand = ctypes.CDLL(None).srand
        libc_srand.argtypes = [ctypes.c_uint]
        seeders.append(libc_srand)
    except (OSError, AttributeError):
        pass

    def speak(req):
        for seed_with in seeders:
            seed_with(req["seed"])
        for param, value in ((1, req["rate"]), (2, 100), (3, req["pitch"]), (4, req["range"])):
            lib.espeak_SetParameter(param, value, 0)  # espeakRATE, VOLUME, PITCH, RANGE
        text = req["text"].encode()
        chunks.clear()
        # POS_CHARACTER = 1, espeakCHARS_UTF8 = 1
        if lib.espeak_Synth(text, len(text) + 1, 0, 1, 0, 1, None, None) != 0:
            return None
        return b"".join(chunks)

    def reply(stream, pcm):
        if pcm is None:
            stream.write(struct.pack("<i", -1))
        else:
            stream.write(struct.pack("<i", len(pcm) // 2)); stream.write(pcm)
        stream.flush()

    def read_reply(stream):
        head = stream.read(4)
        n = struct.unpack("<i", head)[0] if len(head) == 4 else -1
        return stream.read(2 * n) if n >= 0 else None

    if not hasattr(os, "fork"):
        voice = None
        for line in sys.stdin.buffer:
            req = json.loads(line)
            if req["voice"] != voice:
                ok = lib.espeak_SetVoiceByName(req["voice"].encode()) == 0
                voice = req["voice"] if ok else None
            reply(out, speak(req) if voice == req["voice"] else None)
        return

    def serve_voice(name, requests, replies):
        # a process that loaded one voice and never speaks itself
        ok = lib.espeak_SetVoiceByName(name.encode()) == 0
        for line in requests:
            if not ok:
                reply(replies, None)
                continue
            pid = os.fork()
            if pid == 0:
                reply(replies, speak(json.loads(line)))
                os._exit(0)
            os.waitpid(pid, 0)

    voices = {}  # name -> (pid, request stream, reply stream)
    for line in sys.stdin.buffer:
        name = json.loads(line)["voice"]
        if name not in voices:
            req_r, req_w = os.pipe()
            rep_r, rep_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                for _, w, r in voices.values():  # others' pipes: theirs to close, not ours
                    w.close(); r.close()
                os.close(req_w); os.close(rep_r)
                serve_voice(name, os.fdopen(req_r, "rb"), os.fdopen(rep_w, "wb"))
                os._exit(0)
            os.close(req_r); os.close(rep_w)
            voices[name] = (pid, os.fdopen(req_w, "wb"), os.fdopen(rep_r, "rb"))
        _, requests, replies = voices[name]
        requests.write(line); requests.flush()
        reply(out, read_reply(replies))
    for pid, w, r in voices.values():
        w.close(); r.close(); os.waitpid(pid, 0)

main()
"""


class _EspeakWorker:
    """One worker process; requests are answered in order, one at a time."""

    def __init__(self) -> None:
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
        except OSError as e:
            raise BackendUnavailable(f"cannot start the espeak worker: {e}") from e
        rate = self._read_int()
        if rate is None or rate <= 0:
            assert self._proc.stdout is not None
            reason = self._proc.stdout.read().decode(errors="replace").strip() or "no reason given"
            self.close()
            raise BackendUnavailable(
                f"libespeak-ng did not load or initialise ({reason}); pip install satn[speech]"
            )
        self.sample_rate = rate

    def _read_int(self) -> int | None:
        assert self._proc.stdout is not None
        head = self._proc.stdout.read(4)
        return struct.unpack("<i", head)[0] if len(head) == 4 else None

    def speak(self, request: dict) -> np.ndarray:
        """-> (n,) int16 at ``sample_rate``."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write((json.dumps(request) + "\n").encode())
        self._proc.stdin.flush()
        n = self._read_int()
        if n is None or n < 0:
            raise RuntimeError(f"espeak could not speak {request!r}")
        return np.frombuffer(self._proc.stdout.read(2 * n), dtype="<i2")

    def close(self) -> None:
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


class EspeakBackend:
    """libespeak-ng through worker processes; safe to call from several threads."""

    name = "espeak"

    def __init__(self, workers: int = 2) -> None:
        self._idle: queue.Queue[_EspeakWorker] = queue.Queue()
        self._all: list[_EspeakWorker] = []
        try:
            for _ in range(max(1, workers)):
                w = _EspeakWorker()
                self._all.append(w)
                self._idle.put(w)
        except BackendUnavailable:
            self.close()
            raise
        self.native_rate = self._all[0].sample_rate

    def speak(
        self, text: str, voice: Voice, prosody: Prosody, rng: np.random.Generator
    ) -> np.ndarray:
        # Vocal-tract size without a voice file: espeak renders for a slightly different
        # sample rate and the resampling to 16 kHz scales every frequency (formants and
        # F0) by ``fs``; F0 and tempo are pre-divided by ``fs`` so only formants move.
        src_rate = int(round(self.native_rate * voice.formant_scale / 250) * 250)
        fs = src_rate / self.native_rate
        request = {
            "voice": f"en-us+{voice.variant}",
            "text": text,
            "rate": int(np.clip(round(175 * voice.rate * prosody.rate / fs), 80, 450)),
            "pitch": int(
                np.clip(round(50 + 50 * math.log2(voice.pitch * prosody.pitch / fs)), 0, 100)
            ),
            "range": int(np.clip(round(50 * prosody.range), 0, 100)),
            "seed": int(rng.integers(2**31)),
        }
        worker = self._idle.get()
        try:
            pcm = worker.speak(request)
        finally:
            self._idle.put(worker)
        g = math.gcd(SAMPLE_RATE, src_rate)
        return _signal().resample_poly(pcm / 32768.0, SAMPLE_RATE // g, src_rate // g)

    def close(self) -> None:
        for w in self._all:
            w.close()
        self._all.clear()


@functools.lru_cache(maxsize=1)
def _espeak_probe() -> str | None:
    """None when libespeak-ng loads and initialises here, else why not (checked once)."""
    try:
        _EspeakWorker().close()
    except BackendUnavailable as e:
        return str(e)
    return None


def espeak_available() -> bool:
    """Whether the espeak backend runs here (libespeak-ng importable and initialising)."""
    return _espeak_probe() is None


def espeak_problem() -> str | None:
    """Why the espeak backend does not run here, or None when it does."""
    return _espeak_probe()
