"""satn's demo corpus: synthetic emotional speech in the IEMOCAP layout, generated on
the user's machine so that the quick start needs no corpus on disk.

:mod:`satn.demo.corpus` plans and writes the corpus (dialogs, label files,
transcripts, a marker that makes a second call a no-op); :mod:`satn.demo.synth`
renders each sentence (a formant synthesiser, or eSpeak NG where installed) with
an emotion's prosody and voice quality. Reading the corpus back is
:mod:`satn.corpora`' job: it loads as IEMOCAP, tagged ``demo``.
"""

from satn.demo.corpus import MARKER, DemoSummary, write_demo_corpus

__all__ = ["MARKER", "DemoSummary", "write_demo_corpus"]
