"""What a user's shell gets: the installed `satn-sweep`, run with a bare environment
(no RAY_* or MLFLOW_* variables, a fresh HOME), listens on loopback only and
authenticates Ray with a token only the user can read."""

from __future__ import annotations

import ipaddress
import os
import stat
import subprocess
import time

import psutil
import pytest
import yaml
from userenv import bare_env, entry_point

TINY = {
    "data": {"corpus": "demo", "demo_per_class": 2},
    "model": {"tcn": {"channels": 16, "dilations": [1, 2]}, "attention": {"heads": 2}},
    "train": {"epochs": 1, "batch_size": 8, "lr": 3e-3, "device": "cpu"},
}
SPACE = {"name": "exposure", "metric": "dev_ua_best", "mode": "max", "num_samples": 1,
         "scheduler": {"kind": "fifo"}, "params": {"train.lr": {"loguniform": [1e-3, 5e-3]}}}


def listening(proc: psutil.Process) -> set[tuple[str, str, int]]:
    """(process name, address, port) of every socket ``proc`` and its descendants accept on."""
    out = set()
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return out
    for p in procs:
        try:
            for c in p.net_connections(kind="inet"):
                bound = c.status == psutil.CONN_LISTEN or (c.type == 2 and not c.raddr)  # UDP
                if bound and c.laddr:
                    out.add((p.name(), c.laddr.ip, c.laddr.port))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return addr.is_loopback


@pytest.mark.slow  # a whole local sweep through the installed command: about a minute
def test_local_sweep_listens_on_loopback_only_with_token_auth(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    (tmp_path / "ray_config.yaml").write_text(yaml.safe_dump({"ray": {"num_cpus": 2}}))
    proc = subprocess.Popen(
        [entry_point("satn-sweep"), "--space", "space.yaml", "--config", "tiny.yaml",
         "--name", "exposure"],
        cwd=tmp_path, env=bare_env(home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    watched = psutil.Process(proc.pid)
    seen: set[tuple[str, str, int]] = set()
    deadline = time.time() + 540
    while proc.poll() is None and time.time() < deadline:
        seen |= listening(watched)
        time.sleep(0.25)
    if proc.poll() is None:
        proc.kill()
    output = proc.communicate()[0]
    assert proc.returncode == 0, output[-3000:]
    assert "sweep exposure: 1 trial(s)" in output and "best configuration" in output

    names = {name for name, _, _ in seen}
    # the check saw Ray itself, so an empty list cannot pass it
    assert any("gcs_server" in n for n in names) and any("raylet" in n for n in names), seen
    exposed = sorted(s for s in seen if not is_loopback(s[1]))
    assert not exposed, f"listening beyond loopback: {exposed}"

    token = home / ".config" / "satn" / "ray_auth_token"
    assert token.is_file() and len(token.read_text().strip()) >= 32
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert not (home / ".ray" / "auth_token").exists()  # satn's token, not Ray's default one


def test_ray_environment_by_mode(tmp_path, monkeypatch):
    from satn.config import RayConfig, RuntimeConfig
    from satn.sweep import ray_environment

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    local = ray_environment(RuntimeConfig())
    assert local["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"  # loopback binding
    assert local["RAY_AUTH_MODE"] == "token"
    assert local["RAY_AUTH_TOKEN_PATH"] == str(tmp_path / "satn" / "ray_auth_token")
    cluster = ray_environment(RuntimeConfig(ray=RayConfig(address="auto")))
    # on a cluster the nodes must be reachable from each other, behind the token
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in cluster
    assert cluster["RAY_AUTH_MODE"] == "token" and "RAY_AUTH_TOKEN_PATH" not in cluster


def test_a_local_ray_refuses_a_non_loopback_address():
    import pytest

    from satn.config import ConfigError, RayConfig

    with pytest.raises(ConfigError, match="ray.node_ip must be a loopback address"):
        RayConfig(node_ip="0.0.0.0")
    with pytest.raises(ConfigError, match="ray.auth must be one of"):
        RayConfig(auth="none")
    assert RayConfig(address="auto", node_ip="10.0.0.5").node_ip == "10.0.0.5"


def test_token_file_is_private_and_tightened(tmp_path):
    import pytest

    from satn.config import ConfigError
    from satn.sweep import ensure_token

    path = ensure_token(tmp_path / "cfg" / "tok")
    first = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(first) == 64
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    os.chmod(path, 0o644)
    assert ensure_token(path).read_text() == first  # kept, not replaced
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        ensure_token(path)


def test_cluster_secrets_are_written_once_and_private(tmp_path):
    from click.testing import CliRunner

    from satn.cli import main

    out = tmp_path / "cluster.env"
    res = CliRunner().invoke(main, ["cluster-secrets", "--out", str(out)])
    assert res.exit_code == 0, res.output
    env = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == env["MLFLOW_TRACKING_PASSWORD"]
    assert len(env["MLFLOW_TRACKING_PASSWORD"]) >= 24
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    again = CliRunner().invoke(main, ["cluster-secrets", "--out", str(out)])
    assert again.exit_code == 1 and "exists" in again.output
    assert dict(line.split("=", 1) for line in out.read_text().splitlines()) == env
