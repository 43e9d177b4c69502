"""Test-wide settings: profiles are cached in a folder of the test session, never in the user's home, and
capped at 3 s (on a shared VM a profile seldom knows its costs to ±2% within the default 30 s cap, since
the machine's speed drifts over tens of seconds; tests that check the stopping rule pass their own cap)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _profile_settings(tmp_path_factory: pytest.TempPathFactory):
    patch = pytest.MonkeyPatch()
    patch.setenv("PDASGD_PROFILE_CACHE", str(tmp_path_factory.mktemp("profiles")))
    patch.setenv("PDASGD_PROFILE_CAP_S", "3")
    yield
    patch.undo()
