"""Test-wide settings: profiles are cached in a folder of the test session, never in the user's home."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _profile_cache(tmp_path_factory: pytest.TempPathFactory):
    patch = pytest.MonkeyPatch()
    patch.setenv("PDASGD_PROFILE_CACHE", str(tmp_path_factory.mktemp("profiles")))
    yield
    patch.undo()
