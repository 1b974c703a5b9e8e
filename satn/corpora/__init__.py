"""Corpora on disk -> :class:`Utterance` records, one loader per corpus layout.

:func:`load_corpus` picks the loader named by ``DataConfig.corpus``:

- ``iemocap``: an IEMOCAP release (``DataConfig.root`` = the folder holding ``SessionN``);
- ``demo``: satn's generated corpus, in the IEMOCAP layout (loaded as IEMOCAP, tagged
  ``demo``; it must already have been generated at ``root``);
- ``ravdess``: RAVDESS speech (``root`` holds ``Actor_NN`` folders);
- ``manifest``: any corpus described by a CSV/TSV file (``root`` = that file);
- ``arctic``: CMU ARCTIC read speech with transcripts, unlabelled (for the ASR teacher).

Loaders only check that audio files exist; they never read audio.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from satn.config import ConfigError, DataConfig
from satn.corpora.arctic import load_arctic
from satn.corpora.base import CorpusLoad, Problem, Utterance
from satn.corpora.iemocap import load_iemocap
from satn.corpora.manifest import load_manifest
from satn.corpora.ravdess import load_ravdess

__all__ = ["CorpusLoad", "LOADERS", "Problem", "Utterance", "load_corpus"]


def _iemocap_layout(tag: str) -> Callable[[DataConfig], CorpusLoad]:
    def load(cfg: DataConfig) -> CorpusLoad:
        return load_iemocap(
            cfg.root,
            protocol=cfg.protocol,
            classes=cfg.classes,
            label_map=cfg.label_map,
            corpus=tag,
        )

    return load


def _ravdess(cfg: DataConfig) -> CorpusLoad:
    return load_ravdess(cfg.root, classes=cfg.classes, label_map=cfg.label_map)


def _manifest(cfg: DataConfig) -> CorpusLoad:
    return load_manifest(cfg.root, classes=cfg.classes, label_map=cfg.label_map)


LOADERS: Mapping[str, Callable[[DataConfig], CorpusLoad]] = MappingProxyType(
    {
        "iemocap": _iemocap_layout("iemocap"),
        "demo": _iemocap_layout("demo"),
        "ravdess": _ravdess,
        "manifest": _manifest,
        "arctic": lambda cfg: load_arctic(cfg.root),
    }
)


def load_corpus(cfg: DataConfig) -> CorpusLoad:
    """The utterances (and problems) of the corpus that ``cfg`` names.

    Raises :class:`ConfigError` for an empty ``root``, a root that is missing or of
    the wrong kind (each loader names the path), or a folder that cannot be read.
    """
    loader = LOADERS[cfg.corpus]  # DataConfig accepts only the corpora listed there
    if not cfg.root:
        what = "manifest file" if cfg.corpus == "manifest" else "corpus folder"
        raise ConfigError(f"data.root is empty: give the {cfg.corpus} {what}")
    try:
        return loader(cfg)
    except OSError as e:  # a folder of the corpus that cannot be listed or read
        raise ConfigError(f"{cfg.corpus} corpus at {cfg.root}: cannot read "
                          f"{e.filename or 'a file'} ({e.strerror or e})") from e
