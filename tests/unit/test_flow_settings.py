"""The delivery flow takes each account breaker's settings from ``limits.outage``."""

from __future__ import annotations

from typing import Any

from connector.config import LimitSettings, OutageSettings
from connector.core.breaker import BreakerSettings
from connector.delivery.flow import Flow
from connector.delivery.ports import NullObserver
from tests.support.engine_fakes import FakeProvider


def test_limits_outage_configures_each_account_breaker() -> None:
    chosen: dict[str, Any] = {
        "window": 7,
        "window_s": 3.0,
        "min_requests": 2,
        "failure_ratio": 0.25,
        "probe_interval_s": 0.5,
        "probe_backoff": 3.0,
        "probe_interval_cap_s": 9.0,
    }
    limits = LimitSettings(outage=OutageSettings(enabled=False, **chosen))
    providers = {name: FakeProvider(name) for name in ("a", "b")}
    flow = Flow(providers, limits, NullObserver())
    assert not flow.outage_enabled
    assert set(flow.breakers) == {"a", "b"}
    for breaker in flow.breakers.values():
        assert isinstance(breaker.settings, BreakerSettings)
        assert breaker.settings.model_dump(exclude={"enabled"}) == chosen
