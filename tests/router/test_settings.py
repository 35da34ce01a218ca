"""router/settings.py: a bad worker URL or an unknown policy is refused, naming the setting."""

from __future__ import annotations

import pytest

from common.settings_io import SettingsError
from router.settings import RouterSettings


def test_router_rejects_bad_worker_url_and_policy():
    with pytest.raises(SettingsError, match="workers"):
        RouterSettings.load(workers=["127.0.0.1:8000"])
    with pytest.raises(SettingsError, match="policy"):
        RouterSettings.load(workers=["http://a:1"], policy="random_walk")
