"""`ray up` has no dry run: validate the cluster YAML offline with Ray's own schema."""

import copy

import pytest
import yaml

pytest.importorskip("ray")
from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: E402


def _load(repo_root):
    return yaml.safe_load((repo_root / "cluster" / "ray_config.yaml").read_text())


def test_cluster_config_passes_rays_schema(repo_root):
    cfg = prepare_config(_load(repo_root))
    validate_config(cfg)
    workers = cfg["available_node_types"]["gpu_worker"]
    assert workers["resources"]["GPU"] >= 1  # GPU workers, as the sweep expects
    setup = "\n".join(cfg["setup_commands"])
    assert "requirements.lock" in setup and "pip install" in setup and "/shared" in setup


def test_schema_check_is_not_vacuous(repo_root):
    broken = copy.deepcopy(_load(repo_root))
    del broken["available_node_types"]["gpu_worker"]["resources"]
    with pytest.raises(Exception, match="resources"):
        validate_config(prepare_config(broken))


def test_runtime_resources_fit_a_gpu_worker(repo_root):
    from satn.config import RuntimeConfig

    runtime = RuntimeConfig.from_yaml(repo_root / "cluster" / "runtime.yaml")
    worker = _load(repo_root)["available_node_types"]["gpu_worker"]["resources"]
    trial = runtime.resources.per_trial
    assert trial["cpu"] <= worker["CPU"] and trial["gpu"] <= worker["GPU"]
