"""services/genrm_server/settings.py: a bad server setting is refused, naming the setting, its flag and env var."""

from __future__ import annotations

import pytest

from common.settings_io import SettingsError
from services.genrm_server.settings import ServerSettings


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
