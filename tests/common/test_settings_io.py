"""common/settings_io.py: precedence (flag > env > YAML > default), comma-separated env lists, unknown YAML keys
named; exercised through the server's and the router's settings classes."""

from __future__ import annotations

import pytest

from common.settings_io import SettingsError
from router.settings import RouterSettings
from services.genrm_server.settings import ServerSettings


def test_precedence_flag_over_env_over_yaml(tmp_path, monkeypatch):
    cfg = tmp_path / "genrm.yaml"
    cfg.write_text("server:\n  model: /m\n  max_batch_size: 7\n  max_wait_ms: 9\n  port: 1234\n"
                   "router:\n  workers: [http://a:1]\n  policy: least_outstanding\n")
    monkeypatch.setenv("GENRM_SERVER_MAX_WAIT_MS", "3")
    monkeypatch.setenv("GENRM_SERVER_PORT", "4321")
    s = ServerSettings.load(cfg, port=5555)
    assert (s.model, s.max_batch_size, s.max_wait_ms, s.port) == ("/m", 7, 3.0, 5555)
    assert RouterSettings.load(cfg).workers == ["http://a:1"]


def test_env_list_is_comma_separated(monkeypatch):
    monkeypatch.setenv("GENRM_ROUTER_WORKERS", "http://a:1, http://b:2/")
    assert RouterSettings.load().workers == ["http://a:1", "http://b:2"]


def test_unknown_yaml_key_is_named(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("server:\n  model: /m\n  max_batchsize: 3\n")
    with pytest.raises(SettingsError, match="max_batchsize"):
        ServerSettings.load(cfg)
