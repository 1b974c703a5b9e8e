"""The demo corpus: small, synthetic, in the IEMOCAP release layout.

``write_demo_corpus(out)`` writes 5 sessions x 2 speakers (one F, one M per session)
of synthetic emotional speech, so that satn's quick start and end-to-end tests run
without a licensed corpus, and the IEMOCAP loader reads it unchanged::

    SessionN/sentences/wav/<dialog>/<utterance>.wav      16 kHz mono PCM-16
    SessionN/dialog/EmoEvaluation/<dialog>.txt           label + evaluator lines
    SessionN/dialog/transcriptions/<dialog>.txt          CRLF line ends
    demo.json                                            parameters; written last

Counts (exact, for any seed): each speaker has ``per_class`` improvised and
``scripted_per_class`` scripted utterances of each class neu / hap / sad / ang, where
``per_class // 3`` of the improvised happy ones (and ``scripted_per_class // 3`` of the
scripted) carry IEMOCAP's raw label ``exc``. So the satn protocol (improvised, exc -> hap)
yields ``2 * per_class`` per session and class, ``40 * per_class`` in all, and the full
protocol ``40 * (per_class + scripted_per_class)``. With ``quirks=True`` each session
also has, in improvised dialogs only, turns that no protocol counts: per speaker one
``xxx`` turn plus one ``fru`` (F) or ``oth`` (M) turn, one id without a label line
(``Ses01F_impro01_MXX0``, with a wav), and two transcript lines without an id
(``M: Yeah.``, ``F:Umm.``). Wav files: ``40 * (per_class + scripted_per_class)``, plus
25 with quirks.

The audio is synthetic (see :mod:`satn.demo.synth` and docs/demo-corpus.md): it
carries emotion cues a model can learn, and says nothing about real emotion recognition.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
import wave
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from satn.config import DEFAULT_CLASSES, ConfigError
from satn.demo import synth

DEMO_VERSION = 1  # bump when the generator's output changes: old corpora are rewritten
MARKER = "demo.json"
LOCK = ".demo.lock"
SESSIONS = (1, 2, 3, 4, 5)
CLASSES = DEFAULT_CLASSES  # neu, hap, sad, ang
TURNS_PER_DIALOG = 16  # per speaker; larger corpora get more dialogs, not longer ones
# independent random streams, each seeded by (seed, stream, ...)
_PLAN, _AUDIO, _TEXTS, _VOICES = 1, 2, 3, 4

# What each speaker says: short, emotionally neutral sentences, so the emotion is in
# the voice, not in the words.
SENTENCES = (
    "Excuse me.",
    "Could you tell me where the station is?",
    "I was just about to call you.",
    "We went there last summer.",
    "The meeting starts at ten tomorrow.",
    "I don't think that is what he said.",
    "Can you hand me the blue folder?",
    "She moved to a new apartment.",
    "It was on the second floor.",
    "Let me check the schedule first.",
    "We have to leave in twenty minutes.",
    "Did you see the letter from the bank?",
    "That is the third time this week.",
    "I left my keys on the kitchen table.",
    "He works at the hospital downtown.",
    "They are coming over on Friday.",
    "Where did you put the tickets?",
    "The train was late again.",
    "I will think about it.",
    "Why would you say that?",
    "My brother lives in Chicago.",
    "The office closes at five.",
    "You said you would be here by noon.",
    "I need to talk to you about something.",
    "It is raining outside.",
    "We can take the bus instead.",
    "Do you remember her name?",
    "I read it in the paper this morning.",
    "There were 12 people in the room.",
    "The car is parked across the street.",
    "What time does the store open?",
    "I have never been there before.",
    "You can keep it if you want.",
    "He said he would call back later.",
    "Let's just wait and see.",
    "That is not what I asked for.",
    "The form needs two signatures.",
    "We painted the fence last weekend.",
    "Is this seat taken?",
    "I got the job.",
    "She told me about it yesterday.",
    "It has been a long day.",
    "Can we talk about this later?",
    "I found the old photographs.",
    "The package arrived this afternoon.",
    "Are you sure about that?",
    "We should have left earlier.",
    "I am going to the airport.",
)
_NO_ID_LINES = ("M: Yeah.", "F:Umm.")  # transcript lines without an utterance id

# Evaluator vocabulary of IEMOCAP's categorical lines, and a neighbour that a
# dissenting evaluator picks instead.
_CATEGORY = {
    "neu": "Neutral", "hap": "Happiness", "exc": "Excited", "sad": "Sadness",
    "ang": "Anger", "fru": "Frustration", "oth": "Other", "sur": "Surprise",
}  # fmt: skip
_DISSENT = {"neu": "fru", "hap": "exc", "exc": "hap", "sad": "neu", "ang": "fru",
            "fru": "ang", "oth": "sur"}  # fmt: skip
# (valence, activation, dominance) ranges of evaluators' 1-5 scores per raw label
_VAD = {
    "neu": ((2, 3), (2, 3), (2, 3)), "hap": ((4, 5), (3, 4), (3, 4)),
    "exc": ((4, 5), (4, 5), (3, 4)), "sad": ((1, 2), (1, 2), (2, 3)),
    "ang": ((1, 2), (4, 5), (4, 5)), "fru": ((1, 2), (3, 4), (3, 4)),
    "oth": ((2, 4), (2, 4), (2, 4)), "xxx": ((2, 4), (2, 4), (2, 4)),
}  # fmt: skip
_COMMENTS = ("", "", "", "mildly aggravated but staying polite, attitude", "tone", "speaking rate")
# which voice style renders a raw label (xxx: any class, drawn per turn)
_STYLE = {"neu": "neu", "hap": "hap", "exc": "hap", "sad": "sad", "ang": "ang",
          "fru": "ang", "oth": "neu"}  # fmt: skip


@dataclass(frozen=True)
class DemoSummary:
    """What :func:`write_demo_corpus` wrote (or found already written).

    ``counts`` and ``scripted_counts`` map session (``"Ses01"``, as the IEMOCAP loader
    names it) -> class -> utterances, for improvised (the satn protocol) and scripted
    dialogs, after ``exc -> hap``. ``seconds`` is the time this call took.
    """

    root: Path
    n_wavs: int
    counts: Mapping[str, Mapping[str, int]]
    scripted_counts: Mapping[str, Mapping[str, int]]
    backend: str  # "espeak" | "formant"
    seconds: float
    reused: bool  # True: a complete corpus with these parameters was already there
    per_class: int
    seed: int
    scripted_per_class: int
    quirks: bool

    @property
    def total(self) -> int:
        """Utterances of the four classes in improvised dialogs (the satn protocol)."""
        return sum(sum(c.values()) for c in self.counts.values())


@dataclass(frozen=True)
class _Turn:
    """One line of a dialog as planned, before any audio exists."""

    gender: str
    raw_label: str | None  # None: no label line (the XX0 turn, lines without an id)
    text: str
    kind: str = "turn"  # "turn" | "unlabelled" (id, wav, no label) | "no_id" (text only)


@dataclass(frozen=True)
class _Dialog:
    session: int
    name: str
    improvised: bool
    turns: tuple[_Turn, ...]


def write_demo_corpus(
    out: str | Path,
    *,
    per_class: int = 8,
    seed: int = 0,
    scripted_per_class: int = 1,
    quirks: bool = True,
    backend: str = "auto",
    workers: int = 2,
) -> DemoSummary:
    """Write the demo corpus under ``out``; see the module docstring for its counts.

    Deterministic: the same arguments and backend give byte-identical files. ``out``
    must be absent, empty, or a demo corpus: a complete one with the same parameters is
    returned at once (``reused``), any other is replaced. Anything else raises
    :class:`ConfigError`, as do bad arguments. ``backend``: ``espeak``, ``formant``, or
    ``auto``: reuse a corpus made by either, else write with espeak when libespeak-ng
    runs here and with formant otherwise. ``workers`` threads (and espeak processes)
    synthesise in parallel; their number never changes the output.
    """
    t0 = time.perf_counter()
    _check_args(per_class, seed, scripted_per_class, backend)
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"demo corpus target {out} is a file, not a directory")
    _refuse_foreign(out)
    if backend == "espeak" and not synth.espeak_available():
        raise ConfigError(f"backend 'espeak' cannot run here: {synth.espeak_problem()}")
    params = {
        "version": DEMO_VERSION,
        "per_class": per_class,
        "seed": seed,
        "scripted_per_class": scripted_per_class,
        "quirks": quirks,
    }
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out):
        _refuse_foreign(out)  # again, now that no other writer can interleave
        marker = _read_marker(out)
        if marker is not None and _is_complete(out, marker, params, backend):
            return _summary(out, marker, t0, reused=True)
        if marker is not None:  # a demo corpus with other parameters, or unfinished
            for s in SESSIONS:
                shutil.rmtree(out / f"Session{s}", ignore_errors=True)
        used = synth.resolve_backend(backend)
        dialogs = _plan_corpus(
            per_class=per_class, seed=seed, scripted_per_class=scripted_per_class, quirks=quirks
        )
        counts, scripted = _count(dialogs)
        marker = {
            "satn_demo_corpus": DEMO_VERSION,
            "complete": False,
            "params": {**params, "backend": used},
        }
        _write_marker(out, marker)  # from here on the folder is known as a demo corpus
        n_wavs = _write_dialogs(out, dialogs, seed, used, workers)
        marker.update(complete=True, n_wavs=n_wavs, counts=counts, scripted_counts=scripted)
        _write_marker(out, marker)
        return _summary(out, marker, t0, reused=False)


def _plan_corpus(
    *, per_class: int, seed: int, scripted_per_class: int, quirks: bool
) -> list[_Dialog]:
    """Every dialog of the corpus with its turns in order: labels, speakers, texts."""
    dialogs: list[_Dialog] = []
    for s in SESSIONS:
        rng = np.random.default_rng([seed, _PLAN, s])
        for improvised, n in ((True, per_class), (False, scripted_per_class)):
            if n == 0:
                continue
            extra = {"F": ["xxx", "fru"], "M": ["xxx", "oth"]} if improvised and quirks else {}
            labels = {g: _speaker_labels(n, extra.get(g, []), rng) for g in "FM"}
            per_speaker = max(len(v) for v in labels.values())
            n_dialogs = max(2 if improvised else 1, math.ceil(per_speaker / TURNS_PER_DIALOG))
            for k in range(n_dialogs):
                lead = "FM"[k % 2]  # both prefixes occur, as in the release
                kind = f"impro{k + 1:02d}" if improvised else f"script{k + 1:02d}_1"
                name = f"Ses{s:02d}{lead}_{kind}"
                turns = [
                    _Turn(g, raw, _sentence(rng)) for g in "FM" for raw in labels[g][k::n_dialogs]
                ]
                rng.shuffle(turns)
                if improvised and quirks and k == 0:
                    odd = "M" if s % 2 else "F"
                    _insert(turns, _Turn(odd, None, _sentence(rng), "unlabelled"), rng)
                    for line in _NO_ID_LINES:
                        _insert(turns, _Turn(line[0], None, line, "no_id"), rng)
                dialogs.append(_Dialog(s, name, improvised, tuple(turns)))
    return dialogs


def _speaker_labels(n: int, extra: list[str], rng: np.random.Generator) -> list[str]:
    """n of each class (n // 3 of the happy ones as raw ``exc``) plus ``extra``, shuffled."""
    labels = [c for c in CLASSES for _ in range(n)]
    hap = [i for i, c in enumerate(labels) if c == "hap"]
    for i in rng.choice(hap, size=n // 3, replace=False):
        labels[int(i)] = "exc"
    labels += extra
    rng.shuffle(labels)
    return labels


def _sentence(rng: np.random.Generator) -> str:
    return SENTENCES[int(rng.integers(len(SENTENCES)))]


def _insert(turns: list[_Turn], turn: _Turn, rng: np.random.Generator) -> None:
    turns.insert(int(rng.integers(1, len(turns) + 1)), turn)


def _count(dialogs: list[_Dialog]) -> tuple[dict, dict]:
    """session -> class -> n, for improvised and scripted dialogs (exc -> hap)."""
    counts: tuple[dict, dict] = ({}, {})
    for d in dialogs:
        table = counts[0 if d.improvised else 1].setdefault(
            f"Ses{d.session:02d}", dict.fromkeys(CLASSES, 0)
        )
        for t in d.turns:
            label = "hap" if t.raw_label == "exc" else t.raw_label
            if label in table:
                table[label] += 1
    return counts


# ---------------------------------------------------------------- writing


def _write_dialogs(out: Path, dialogs: list[_Dialog], seed: int, backend: str, workers: int) -> int:
    """Synthesise every wav (in parallel) and write the label and transcript files."""
    voices = _voices(seed)
    jobs = []  # (wav path, turn, voice, seed sequence of the turn)
    ids: list[list[str | None]] = []
    for di, d in enumerate(dialogs):
        wav_dir = out / f"Session{d.session}" / "sentences" / "wav" / d.name
        wav_dir.mkdir(parents=True, exist_ok=True)
        numbers = {"F": 0, "M": 0}
        dialog_ids: list[str | None] = []
        for ti, t in enumerate(d.turns):
            if t.kind == "no_id":
                dialog_ids.append(None)
                continue
            if t.kind == "unlabelled":
                uid = f"{d.name}_{t.gender}XX0"
            else:
                uid = f"{d.name}_{t.gender}{numbers[t.gender]:03d}"
                numbers[t.gender] += 1
            dialog_ids.append(uid)
            turn_seed = np.random.SeedSequence([seed, _AUDIO, d.session, di, ti])
            jobs.append((wav_dir / f"{uid}.wav", t, voices[(d.session, t.gender)], turn_seed))
        ids.append(dialog_ids)

    with synth.open_backend(backend, workers=workers) as speaker:

        def speak(job) -> float:
            path, turn, voice, turn_seed = job
            rng = np.random.default_rng(turn_seed)
            style = _STYLE.get(turn.raw_label or "neu") or CLASSES[int(rng.integers(4))]
            prosody = synth.draw_prosody(style, rng)
            audio = synth.render(turn.text, voice, prosody, int(rng.integers(2**63)), speaker)
            _write_wav(path, audio)
            return len(audio) / synth.SAMPLE_RATE

        with ThreadPoolExecutor(max(1, workers)) as pool:
            durations = iter(list(pool.map(speak, jobs)))

    for di, (d, dialog_ids) in enumerate(zip(dialogs, ids, strict=True)):
        rng = np.random.default_rng([seed, _TEXTS, d.session, di])
        _write_texts(out, d, dialog_ids, durations, rng)
    return len(jobs)


def _voices(seed: int) -> dict[tuple[int, str], synth.Voice]:
    """(session, gender) -> voice: each speaker gets a different espeak variant."""
    rng = np.random.default_rng([seed, _VOICES])
    order = {g: rng.permutation(len(synth.VARIANTS[g])) for g in "FM"}
    return {
        (s, g): synth.draw_voice(g, synth.VARIANTS[g][int(order[g][i])], rng)
        for i, s in enumerate(SESSIONS)
        for g in "FM"
    }


def _write_wav(path: Path, audio: np.ndarray) -> None:
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:  # the stdlib writer: no timestamps, stable bytes
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(synth.SAMPLE_RATE)
        w.writeframes(pcm.tobytes())


def _write_texts(
    out: Path,
    d: _Dialog,
    ids: list[str | None],
    durations: Iterator[float],
    rng: np.random.Generator,
) -> None:
    """One dialog's EmoEvaluation (LF) and transcription (CRLF) files; times from durations."""
    t = float(rng.uniform(1.0, 4.0))
    emo = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
    lines = []
    for turn, uid in zip(d.turns, ids, strict=True):
        if uid is None:
            lines.append(turn.text)
            continue
        start, end = t, t + next(durations)
        t = end + float(rng.uniform(0.2, 1.5))
        lines.append(f"{uid} [{start:08.4f}-{end:08.4f}]: {turn.text}")
        if turn.raw_label is not None:
            emo += _label_block(uid, turn, start, end, rng)
    sdir = out / f"Session{d.session}" / "dialog"
    for sub in ("EmoEvaluation", "transcriptions"):
        (sdir / sub).mkdir(parents=True, exist_ok=True)
    (sdir / "EmoEvaluation" / f"{d.name}.txt").write_bytes("\n".join(emo).encode() + b"\n")
    (sdir / "transcriptions" / f"{d.name}.txt").write_bytes(
        "".join(line + "\r\n" for line in lines).encode()
    )


def _label_block(
    uid: str, turn: _Turn, start: float, end: float, rng: np.random.Generator
) -> list[str]:
    """The label line, three categorical and two dimensional evaluators, self-reports."""
    raw = turn.raw_label or "xxx"
    if raw == "xxx":  # the evaluators disagree: no majority
        cats = [
            str(c) for c in rng.choice(["Neutral", "Frustration", "Anger", "Sadness"], 3, False)
        ]
    else:
        dissent = _CATEGORY[_DISSENT[raw]] if rng.random() < 0.3 else _CATEGORY[raw]
        cats = [_CATEGORY[raw], _CATEGORY[raw], dissent]
    scores = [[int(rng.integers(lo, hi + 1)) for lo, hi in _VAD[raw]] for _ in range(2)]
    vad = np.mean(scores, axis=0)
    evaluators = sorted(int(e) for e in rng.choice(np.arange(1, 7), 3, replace=False))
    actor = f"{turn.gender}1"  # the speaking actor's self-evaluation
    lines = [f"[{start:.4f} - {end:.4f}]\t{uid}\t{raw}\t[{vad[0]:.4f}, {vad[1]:.4f}, {vad[2]:.4f}]"]
    lines += [f"C-E{e}:\t{c};\t()" for e, c in zip(evaluators, cats, strict=True)]
    lines.append(f"C-{actor}:\t{cats[0]};\t()")
    for e, (v, a, dom) in zip(evaluators[:2], scores, strict=True):
        comment = _COMMENTS[int(rng.integers(len(_COMMENTS)))]
        lines.append(f"A-E{e}:\tval {v}; act {a}; dom  {dom};\t({comment})")
    v, a, dom = scores[0]
    lines.append(f"A-{actor}:\tval {v}; act {a}; dom  {dom};\t()")
    return lines + [""]


# ---------------------------------------------------------------- the folder and its marker


def _check_args(per_class: int, seed: int, scripted_per_class: int, backend: str) -> None:
    for name, value, low in (("per_class", per_class, 1), ("seed", seed, 0),
                             ("scripted_per_class", scripted_per_class, 0)):  # fmt: skip
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"demo corpus: {name} must be an integer >= {low}, got {value!r}")
    if backend not in ("auto", *synth.BACKENDS):
        raise ConfigError(
            f"demo corpus: unknown backend {backend!r}; known: auto, {', '.join(synth.BACKENDS)}"
        )


def _refuse_foreign(out: Path) -> None:
    """Raise unless ``out`` is absent, empty (but for our lock) or holds a demo marker."""
    if not out.is_dir():
        return
    entries = {p.name for p in out.iterdir()} - {LOCK}
    if entries and _read_marker(out) is None:
        raise ConfigError(
            f"{out} is not empty and is not a satn demo corpus (no {MARKER}); "
            "give an empty or new folder"
        )


def _read_marker(out: Path) -> dict | None:
    try:
        marker = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and "satn_demo_corpus" in marker else None


def _write_marker(out: Path, marker: dict) -> None:
    tmp = out / f"{MARKER}.tmp"
    tmp.write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
    tmp.replace(out / MARKER)  # atomic: a reader sees the old or the new marker


def _is_complete(out: Path, marker: dict, params: dict, backend: str) -> bool:
    """A finished corpus with ``params``, made by ``backend`` (``auto``: by either)."""
    made = dict(marker.get("params") or {})
    made_by = made.pop("backend", None)
    if not marker.get("complete") or made != params or backend not in ("auto", made_by):
        return False
    # a cheap check that nobody deleted files since
    return sum(1 for _ in out.glob("Session*/sentences/wav/*/*.wav")) == marker.get("n_wavs")


def _summary(out: Path, marker: dict, t0: float, *, reused: bool) -> DemoSummary:
    p = marker["params"]

    def frozen(c: dict) -> Mapping[str, Mapping[str, int]]:
        return MappingProxyType({s: MappingProxyType(dict(v)) for s, v in sorted(c.items())})

    return DemoSummary(
        root=out,
        n_wavs=int(marker["n_wavs"]),
        counts=frozen(marker["counts"]),
        scripted_counts=frozen(marker["scripted_counts"]),
        backend=p["backend"],
        seconds=time.perf_counter() - t0,
        reused=reused,
        per_class=p["per_class"],
        seed=p["seed"],
        scripted_per_class=p["scripted_per_class"],
        quirks=p["quirks"],
    )


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` (POSIX): parallel trials may all ask for the
    demo corpus at once; one writes it, the others wait and then reuse it."""
    try:
        import fcntl
    except ImportError:  # no POSIX locks here: single writer assumed
        yield
        return
    with open(out / LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
