"""Corpus on disk -> cached Arrow dataset: the step every command starts with.

Generates the demo corpus when that is the corpus asked for, loads the corpus
into Utterance records and extracts features into the store. Both the demo
writer and the store skip work already done, so calling this again is cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from satn.config import ConfigError, ExperimentConfig, RuntimeConfig
from satn.corpora import load_corpus


def resolve_corpus(cfg: ExperimentConfig, runtime: RuntimeConfig,
                   echo: Callable[[str], None] = print) -> ExperimentConfig:
    """Fill in ``data.root``; for the demo corpus, generate it first (seconds, once)."""
    data = cfg.data
    if data.corpus == "demo":
        from satn.demo import write_demo_corpus

        root = Path(data.root or Path(runtime.data_dir) / "demo-corpus").resolve()
        summary = write_demo_corpus(root, per_class=data.demo_per_class, seed=data.demo_seed)
        echo(f"demo corpus (synthetic speech) at {root}: {summary.n_wavs} wav files")
        return cfg.override({"data.root": str(root)})
    if not data.root:
        raise ConfigError(f"data.root is required for corpus {data.corpus!r} (--root PATH)")
    return cfg.override({"data.root": str(Path(data.root).resolve())})


def corpus_tag(cfg: ExperimentConfig) -> str:
    if cfg.data.corpus in ("iemocap", "demo"):
        return f"{cfg.data.corpus}-{cfg.data.protocol}"
    return cfg.data.corpus


def prepare_dataset(cfg: ExperimentConfig, runtime: RuntimeConfig, *, device: str = "cpu",
                    progress: bool = True, echo: Callable[[str], None] = print,
                    extractor=None):
    """-> (config with data.root resolved, ``satn.store.DatasetInfo``).

    ``extractor``: another kind of features than ``cfg.features`` (a ``satn.store.Extractor``,
    e.g. openSMILE functionals), cached the same way.
    """
    from satn.store import build_dataset

    cfg = resolve_corpus(cfg, runtime, echo)
    load = load_corpus(cfg.data)
    echo(f"corpus {cfg.data.corpus}: {load.summary()}")
    if not load.utterances:
        raise ConfigError(f"no usable utterances in {cfg.data.root} "
                          f"(corpus {cfg.data.corpus}, protocol {cfg.data.protocol})")
    out = runtime.features_dir if "://" in runtime.features_dir else str(
        Path(runtime.features_dir).resolve())
    info = build_dataset(load, cfg.features, out, corpus_tag=corpus_tag(cfg), device=device,
                         progress=progress, extractor=extractor)
    if info.n_rows == 0:
        raise ConfigError(f"no utterance of {cfg.data.root} gave features: all "
                          f"{info.n_problems} input(s) failed, see {info.report_uri}")
    state = "cached, nothing to do" if info.cached else "written"
    echo(f"features: {info.n_rows} utterances at {info.uri} ({state}); "
         f"{info.n_problems} input problem(s) listed in {info.report_uri}")
    return cfg, info


def dataset_of_run(cfg: ExperimentConfig, runtime: RuntimeConfig, key: str, *,
                   echo: Callable[[str], None] = print):
    """The feature dataset (``satn.store.FeatureDataset``) that a run with features key
    ``key`` (its tag ``satn.features_key``) trained on.

    Found by its key in ``runtime.features_dir``; otherwise built from the corpus again,
    which must give the same key: a corpus whose files changed since (new or edited
    files, other file times) gives other data, and a model trained on other data would
    not be the run's refit. Raises ConfigError then.
    """
    from satn.store import open_dataset

    folder = Path(runtime.features_dir)
    if key and "://" not in runtime.features_dir:
        found = sorted(p for p in folder.glob(f"{corpus_tag(cfg)}-*-{key}")
                       if (p / "manifest.json").is_file())
        if found:
            echo(f"features of the run: {found[0]} (cached)")
            return open_dataset(str(found[0].resolve()))
    cfg, info = prepare_dataset(cfg, runtime, echo=echo)
    if key and info.key != key:
        raise ConfigError(f"the run trained on features {key}, which are not in "
                          f"{runtime.features_dir}; the corpus at {cfg.data.root} now gives "
                          f"{info.key} (its files changed since the run): pass the "
                          f"--ray-config whose features_dir holds the run's features")
    return open_dataset(info.uri)
