"""Settings: every variable the seed names, node inventory for any n, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import ConfigError
from app.settings import Settings, nodes_from_env


def test_nodes_for_any_n_in_numeric_order():
    env = {"SPARK10_HOST": "10.0.0.10", "SPARK2_HOST": "10.0.0.2", "SPARK1_HOST": "10.0.0.1",
           "SPARK1_USER": "alice", "SPARK2_PORT": "2200", "USER": "bob"}
    nodes = nodes_from_env(env)
    assert [(n.name, n.host, n.user, n.port) for n in nodes] == [
        ("spark1", "10.0.0.1", "alice", 22), ("spark2", "10.0.0.2", "bob", 2200), ("spark10", "10.0.0.10", "bob", 22)]


def test_no_node_configured_means_this_machine():
    nodes = nodes_from_env({"USER": "bob"})
    assert len(nodes) == 1 and nodes[0].is_local and nodes[0].name == "spark1"


def test_every_seed_variable_is_read(tmp_path):
    env = {
        "SSH_KEY_PATH": "/k/id", "SSH_DIR": "/k", "SSH_KNOWN_HOSTS": "/k/kh", "BIND_PORT": "8080",
        "MODELS_YAML": "/m.yaml", "MODELS_OVERRIDES": "/mo.yaml", "SERVICES_OVERRIDES": "/so.yaml",
        "REDACTION_MAP_DB": str(tmp_path / "r.db"), "CONNECTIVITY_LOG": str(tmp_path / "c.json"),
    }
    s = Settings.from_env(environ=env)
    assert s.ssh_key_path == Path("/k/id") and s.ssh_dir == Path("/k") and s.known_hosts_path == Path("/k/kh")
    assert s.bind_port == 8080
    assert (s.models_yaml, s.models_overrides, s.services_overrides) == (
        Path("/m.yaml"), Path("/mo.yaml"), Path("/so.yaml"))
    assert s.redaction_map_db_path == tmp_path / "r.db"
    assert s.connectivity_log_path == tmp_path / "c.json"


def test_defaults_work_outside_the_container(tmp_path):
    s = Settings.from_env(environ={"XDG_DATA_HOME": str(tmp_path / "xdg")})
    if s.data_dir != Path("/data"):
        assert s.data_dir == tmp_path / "xdg" / "spark-control"
    assert s.known_hosts_path == s.ssh_dir / "known_hosts"
    assert s.connectivity_log_path.parent == s.data_dir


def test_missing_data_directories_are_created(tmp_path):
    s = Settings.from_env(environ={"REDACTION_MAP_DB": str(tmp_path / "a" / "b" / "r.db"),
                                   "CONNECTIVITY_LOG": str(tmp_path / "c" / "d" / "c.json")})
    s.ensure_data_dir()
    assert (tmp_path / "a" / "b").is_dir() and (tmp_path / "c" / "d").is_dir()


@pytest.mark.parametrize("env, names", [
    ({"BIND_PORT": "abc"}, ["BIND_PORT", "'abc'"]),
    ({"BIND_PORT": "70000"}, ["BIND_PORT", "70000"]),
    ({"SPARK1_HOST": "h", "SPARK1_PORT": "ssh"}, ["SPARK1_PORT", "'ssh'"]),
    ({"CONNECTIVITY_INTERVAL_S": "-1"}, ["CONNECTIVITY_INTERVAL_S"]),
])
def test_bad_values_name_the_variable(env, names):
    with pytest.raises(ConfigError) as info:
        Settings.from_env(environ=env)
    for name in names:
        assert name in info.value.message
