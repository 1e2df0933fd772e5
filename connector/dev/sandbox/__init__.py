"""The provider sandbox: one loopback HTTP server that behaves like Meta, YCloud, Z-API and
Zonos for the demo, integration tests and benchmarks (docs/sandbox.md).

Never a target for real traffic: credentials are well-known and the control API is open.
"""

from connector.dev.sandbox.config import (
    Credentials,
    FaultConfig,
    LatencyConfig,
    OrderSeed,
    RateLimit,
    RateLimits,
    Rule,
    SandboxConfig,
    WebhookConfig,
)
from connector.dev.sandbox.server import SandboxServer
from connector.dev.sandbox.state import RecordedRequest

__all__ = [
    "Credentials",
    "FaultConfig",
    "LatencyConfig",
    "OrderSeed",
    "RateLimit",
    "RateLimits",
    "RecordedRequest",
    "Rule",
    "SandboxConfig",
    "SandboxServer",
    "WebhookConfig",
]
