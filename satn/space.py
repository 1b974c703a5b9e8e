"""Search spaces as data: ``experiments/spaces/<name>.yaml`` -> :class:`SearchSpace`.

A space names dotted config keys (``model.attention.heads``) and how to sample them. The
``grid`` kind enumerates named variants (``model.variant: {grid: [...]}``);
lists that Optuna cannot hold, such as dilation schedules, are written as
strings (``"1,2,4,8,16"``) and parsed by the config. No Ray import here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from satn.config import ConfigError, ExperimentConfig, load_yaml

SPACE_KINDS = ("choice", "grid", "uniform", "loguniform", "int")


@dataclass(frozen=True)
class ParamSpec:
    kind: str  # choice | grid | uniform | loguniform | int
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None

    @classmethod
    def parse(cls, key: str, raw: Any) -> ParamSpec:
        if not isinstance(raw, dict) or len(raw) != 1:
            raise ConfigError(f"space param {key}: expected one of {{kind: ...}} for kinds "
                              f"{SPACE_KINDS}, got {raw!r}")
        (kind, arg), = raw.items()
        if kind not in SPACE_KINDS:
            raise ConfigError(f"space param {key}: unknown kind {kind!r}; known: {SPACE_KINDS}")
        if kind in ("choice", "grid"):
            if not isinstance(arg, list) or not arg:
                raise ConfigError(f"space param {key}: {kind} needs a non-empty list")
            return cls(kind, values=tuple(arg))
        if not (isinstance(arg, list) and len(arg) == 2):
            raise ConfigError(f"space param {key}: {kind} needs [low, high], got {arg!r}")
        low, high = float(arg[0]), float(arg[1])
        if not low < high or (kind == "loguniform" and low <= 0):
            raise ConfigError(f"space param {key}: bad range [{low}, {high}] for {kind}")
        return cls(kind, low=low, high=high)

    def examples(self) -> list[Any]:
        """Values that span the spec, for validating it against a config."""
        if self.values:
            return list(self.values)
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        mid = math.sqrt(self.low * self.high) if self.kind == "loguniform" else (
            (self.low + self.high) / 2)
        return [self.low, mid, self.high]


@dataclass(frozen=True)
class SchedulerSpec:
    kind: str = "asha"  # asha | fifo
    grace_period: int = 2  # epochs before a trial may be stopped
    reduction_factor: int = 2


@dataclass(frozen=True)
class SearchSpace:
    name: str
    description: str = ""
    metric: str = "dev_ua_best"  # a key of CrossValidation.epoch_summary
    mode: str = "max"
    num_samples: int = 8  # trials (with grid params: per grid point)
    # optuna: seeded TPE; random: Ray's variant generator (grid points x num_samples)
    algorithm: str = "optuna"
    seed: int = 0
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    fixed: dict[str, Any] = field(default_factory=dict)  # overrides for every trial
    params: dict[str, ParamSpec] = field(default_factory=dict)

    @property
    def grid(self) -> dict[str, ParamSpec]:
        return {k: p for k, p in self.params.items() if p.kind == "grid"}

    def validate(self, base: ExperimentConfig) -> None:
        """Every fixed value and every value a param can take must make a valid config."""
        base = base.override(self.fixed)
        for key, spec in self.params.items():
            for value in spec.examples():
                try:
                    base.override({key: value})
                except (ConfigError, ValueError, TypeError) as e:
                    raise ConfigError(f"space {self.name}: {key}={value!r}: {e}") from e
        self._check_variants(base)

    def _check_variants(self, base: ExperimentConfig) -> None:
        """Every variant a trial may get is registered, and a *_at one has its teacher."""
        from satn.models import available, uses_transfer

        spec = self.params.get("model.variant")
        variants = list(spec.examples()) if spec else [base.model.variant]
        teacher = self.params.get("transfer.teacher") or base.transfer.teacher
        for v in variants:
            if v not in available():
                raise ConfigError(f"space {self.name}: model.variant={v!r} is not a registered "
                                  f"variant; available: {available()}")
            if uses_transfer(v) and not teacher:
                raise ConfigError(f"space {self.name}: model.variant={v} trains with attention "
                                  f"transfer: set transfer.teacher (e.g. --set "
                                  f"transfer.teacher=PATH)")


def spaces_dirs() -> list[Path]:
    """Where named spaces are looked up: ./experiments/spaces, then the source tree's."""
    here = Path(__file__).resolve().parents[1] / "experiments" / "spaces"
    return [Path.cwd() / "experiments" / "spaces", here]


def load_space(name_or_path: str) -> SearchSpace:
    path = Path(name_or_path)
    if not path.is_file():
        candidates = [d / f"{name_or_path}.yaml" for d in spaces_dirs()]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            known = sorted({p.stem for d in spaces_dirs() if d.is_dir() for p in d.glob("*.yaml")})
            raise ConfigError(f"no search space {name_or_path!r}; known: {known}")
    raw = load_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a search space is a mapping")
    allowed = {"name", "description", "metric", "mode", "num_samples", "algorithm", "seed",
               "scheduler", "fixed", "params"}
    unknown = set(raw) - allowed
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; known: {sorted(allowed)}")
    sched = raw.get("scheduler") or {}
    try:
        scheduler = SchedulerSpec(**sched)
    except TypeError as e:
        raise ConfigError(f"{path}: scheduler: {e}") from e
    space = SearchSpace(
        name=str(raw.get("name", path.stem)),
        description=str(raw.get("description", "")),
        metric=str(raw.get("metric", "dev_ua_best")),
        mode=str(raw.get("mode", "max")),
        num_samples=int(raw.get("num_samples", 8)),
        algorithm=str(raw.get("algorithm", "optuna")),
        seed=int(raw.get("seed", 0)),
        scheduler=scheduler,
        fixed=dict(raw.get("fixed") or {}),
        params={k: ParamSpec.parse(k, v) for k, v in (raw.get("params") or {}).items()},
    )
    if space.mode not in ("max", "min"):
        raise ConfigError(f"{path}: mode must be max or min")
    if space.algorithm not in ("optuna", "random"):
        raise ConfigError(f"{path}: algorithm must be optuna or random")
    if space.grid and space.algorithm == "optuna":
        raise ConfigError(f"{path}: grid params {sorted(space.grid)} need algorithm: random "
                          "(Ray's variant generator enumerates grids; Optuna samples)")
    if space.scheduler.kind not in ("asha", "fifo"):
        raise ConfigError(f"{path}: scheduler.kind must be asha or fifo")
    if not space.params:
        # Ray would run num_samples copies of one configuration and call it a search
        raise ConfigError(f"{path}: params is empty; a search space needs at least one "
                          "parameter to search (train one configuration with `satn train`)")
    return space
