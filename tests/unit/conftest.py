"""Fixtures for provider tests; the builders live in ``tests.support.providers``."""

from __future__ import annotations

import pytest

from tests.support.providers import PROVIDER_KINDS


@pytest.fixture(params=PROVIDER_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)
