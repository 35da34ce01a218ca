"""Settings precedence (flag > env > YAML > default), errors that name the setting, and real --help."""

from __future__ import annotations

import subprocess
import sys

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from common.settings_io import SettingsError
from router.settings import RouterSettings
from services.genrm_server.settings import ServerSettings


def _genrm(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


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


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"model": "/m", "max_batch_size": 0}, ["max_batch_size", "--max-batch-size", "GENRM_SERVER_MAX_BATCH_SIZE"]),
        ({"model": "/m", "engine": "tensorrt"}, ["engine", "transformers"]),
        ({"engine": "openai"}, ["upstream_url"]),
        ({}, ["model"]),
    ],
)
def test_bad_server_settings_are_named(kwargs, words):
    with pytest.raises(SettingsError) as info:
        ServerSettings.load(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_unknown_yaml_key_is_named(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("server:\n  model: /m\n  max_batchsize: 3\n")
    with pytest.raises(SettingsError, match="max_batchsize"):
        ServerSettings.load(cfg)


def test_cli_reports_bad_env_setting_and_exits_2(tiny_model):
    import os

    env = {**os.environ, "GENRM_SERVER_MAX_BATCH_SIZE": "lots"}
    result = _genrm("serve", "--model", str(tiny_model), env=env)
    assert result.returncode == 2
    assert "max_batch_size" in result.stderr and "GENRM_SERVER_MAX_BATCH_SIZE" in result.stderr


def test_cli_missing_config_file():
    result = _genrm("route", "--config", "/nonexistent.yaml", "--workers", "http://a:1")
    assert result.returncode == 2 and "config file not found" in result.stderr


@pytest.mark.parametrize("command", ["serve", "route", "up", "tiny-model", "demo"])
def test_help_explains_each_command(command):
    result = _genrm(command, "--help")
    assert result.returncode == 0
    assert "usage: genrm " + command in result.stdout
    if command in ("serve", "route"):
        assert "GENRM_" in result.stdout and "[default:" in result.stdout


def test_tiny_model_command_writes_a_loadable_model(tmp_path):
    out = tmp_path / "m"
    result = _genrm("tiny-model", str(out))
    assert result.returncode == 0, result.stderr
    assert "meaningless" in result.stdout
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    assert model.config.vocab_size == len(tok)
    rendered = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True)
    assert rendered.endswith("<|im_start|>assistant\n")
    again = _genrm("tiny-model", str(out))
    assert again.returncode == 2 and "--force" in again.stderr
