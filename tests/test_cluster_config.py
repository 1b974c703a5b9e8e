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
    from satn.sweep import _gpus_to_pack

    runtime = RuntimeConfig.from_yaml(repo_root / "cluster" / "runtime.yaml")
    worker = _load(repo_root)["available_node_types"]["gpu_worker"]["resources"]
    assert runtime.resources.fold_placement == "workers"  # Ray places every fold
    bundles = runtime.resources.bundles(5)
    # the trial packs onto one GPU worker: its CPUs, and its folds' GPU shares
    assert sum(b.get("CPU", 0) for b in bundles) <= worker["CPU"]
    assert _gpus_to_pack([b["GPU"] for b in bundles if "GPU" in b]) <= worker["GPU"]


def test_cluster_exposes_nothing_but_ssh_and_authenticates_everything(repo_root):
    cfg = _load(repo_root)
    # one declared security group, no inbound rule beyond Ray's intra-group + SSH defaults
    assert cfg["provider"]["security_group"] == {"GroupName": "satn-cluster", "IpPermissions": []}
    head = "\n".join(cfg["head_start_ray_commands"])
    worker = "\n".join(cfg["worker_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    for cmds in (head, worker):
        assert "RAY_AUTH_MODE=token" in cmds
    mounts = cfg["file_mounts"]
    assert "/home/ubuntu/.ray/auth_token" in mounts  # the same token on every node
    setup = "\n".join(cfg["head_setup_commands"] + cfg["setup_commands"])
    assert "|| true" not in setup and "0.0.0.0" not in setup
    script = (repo_root / "cluster" / "start_mlflow.sh").read_text()
    assert "--app-name basic-auth" in script and "0.0.0.0" not in script
    assert "MLFLOW_AUTH_ADMIN_PASSWORD:?" in script  # no server without a password


def test_trials_on_workers_reach_the_heads_mlflow_not_their_own(repo_root, monkeypatch):
    from satn.config import RuntimeConfig
    from satn.sweep import resolve_tracking_uri

    runtime = RuntimeConfig.from_yaml(repo_root / "cluster" / "runtime.yaml")
    uri = runtime.mlflow.tracking_uri
    assert "127.0.0.1" not in uri and "localhost" not in uri and "{head_ip}" in uri
    monkeypatch.setattr("ray.util.get_node_ip_address", lambda: "10.1.2.3")
    assert resolve_tracking_uri(uri) == "http://10.1.2.3:5000"
    assert runtime.ray.auth == "token"


def test_mlflow_auth_settings_hold_no_secret_and_deny_by_default(repo_root):
    import configparser

    ini = configparser.ConfigParser()
    ini.read(repo_root / "cluster" / "mlflow_auth.ini")
    assert ini["mlflow"]["default_permission"] == "NO_PERMISSIONS"
    assert "admin_password" not in ini["mlflow"]
