"""The ``satn`` command group and what its commands share: the experiment options, config
and runtime loading, and one clear line for bad input."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from satn.config import CORPORA, PROTOCOLS, ExperimentConfig, RuntimeConfig
from satn.errors import InputError


def parse_sets(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for p in pairs:
        key, eq, value = p.partition("=")
        if not eq or not key:
            raise click.BadParameter(f"{p!r}: expected KEY=VALUE, e.g. model.attention.heads=8",
                                     param_hint="--set")
        out[key.strip()] = value.strip()
    return out


def experiment_options(fn):
    """--config / --corpus / --root / --protocol / --set / --ray-config."""
    opts = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False),
                     help="Experiment YAML (see experiments/); defaults are used without it."),
        click.option("--corpus", type=click.Choice(CORPORA), default=None,
                     help="Corpus kind (default: demo, generated on first use)."),
        click.option("--root", default=None,
                     help="Corpus root (IEMOCAP/RAVDESS folder, or the manifest CSV/TSV)."),
        click.option("--protocol", type=click.Choice(PROTOCOLS), default=None,
                     help="IEMOCAP protocol: satn (improvised, 4 classes) or full."),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                     help="Override any config key, e.g. --set model.attention.heads=8 "
                          "(repeatable)."),
        click.option("--ray-config", "runtime_path", type=click.Path(dir_okay=False),
                     default=None, help="Runtime settings (default: ./ray_config.yaml)."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def load_experiment(config_path, corpus, root, protocol, sets) -> ExperimentConfig:
    cfg = ExperimentConfig.from_yaml(config_path) if config_path else ExperimentConfig()
    overrides: dict[str, str] = {}
    if corpus:
        overrides["data.corpus"] = corpus
    if root:
        overrides["data.root"] = root
    if protocol:
        overrides["data.protocol"] = protocol
    overrides.update(parse_sets(sets))
    return cfg.override(overrides)


def load_runtime(path: str | None) -> RuntimeConfig:
    if path:
        return RuntimeConfig.from_yaml(path)
    for candidate in (Path.cwd() / "ray_config.yaml",
                      Path(__file__).resolve().parents[2] / "ray_config.yaml"):
        if candidate.is_file():
            return RuntimeConfig.from_yaml(candidate)
    return RuntimeConfig()


def resolve_teacher(cfg: ExperimentConfig, runtime: RuntimeConfig,
                    tracking_uri: str | None) -> ExperimentConfig:
    """``transfer.teacher`` as a local file: an MLflow run id is downloaded (once) beside the
    data, where every trial of a sweep can read it."""
    ref = cfg.transfer.teacher
    if not ref or Path(ref).is_file():
        return cfg
    from satn.safenames import safe_name
    from satn.tracking import teacher_path

    dest = Path(runtime.data_dir).resolve() / "teachers" / safe_name(ref)
    cached = dest / "teacher" / "teacher.pt"
    path = cached if cached.is_file() else teacher_path(
        ref, store_uri(tracking_uri, runtime), dest)
    return cfg.override({"transfer.teacher": str(Path(path).resolve())})


def store_uri(tracking_uri: str | None, runtime: RuntimeConfig) -> str:
    """The MLflow store a command writes to or reads: ``--tracking-uri``, else the runtime's
    ``mlflow.tracking_uri``, else ``./mlflow.db`` (or MLFLOW_TRACKING_URI when set)."""
    from satn.tracking import default_tracking_uri

    return tracking_uri or runtime.mlflow.tracking_uri or default_tracking_uri()


def friendly_errors(fn):
    """Configuration and input errors end with one clear line, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (InputError, FileNotFoundError) as e:
            raise click.ClickException(str(e)) from e

    return wrapper


def public_uri(uri: str) -> str:
    """``uri`` without a user name or password in it: it is logged as a run parameter."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def floats(text: str | None, option: str = "--c") -> tuple[float, ...] | None:
    if not text:
        return None
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as e:
        raise click.BadParameter(f"{text!r}: expected numbers separated by commas",
                                 param_hint=option) from e


@click.group()
@click.version_option(package_name="satn")
def main() -> None:
    """satn: speech emotion recognition with attention transfer and temporal attention."""
