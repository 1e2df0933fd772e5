"""Liveness and readiness of the process as named checks (kafka_connected, partitions_assigned...).

Pure and synchronous: checks read state the running parts keep; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

CheckResult = bool | tuple[bool, str | None]
Check = Callable[[], CheckResult]


@dataclass(frozen=True, slots=True)
class CheckStatus:
    name: str
    ok: bool
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Readiness:
    checks: tuple[CheckStatus, ...]

    @property
    def ready(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failing(self) -> tuple[CheckStatus, ...]:
        return tuple(check for check in self.checks if not check.ok)

    def as_json(self) -> dict[str, object]:
        return {
            "status": "ready" if self.ready else "not_ready",
            "failing": [check.name for check in self.failing],
            "checks": {
                check.name: {"ok": check.ok, **({"detail": check.detail} if check.detail else {})}
                for check in self.checks
            },
        }


class HealthModel:
    """Named readiness checks plus a liveness flag.

    A check is either a callable (evaluated on each ``/readyz``) returning ``ok`` or
    ``(ok, detail)``, or a value set with ``set``. A check that raises counts as failing with
    the exception's type name as detail (its text could carry request data).
    """

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}
        self._dead: str | None = None

    def register(self, name: str, check: Check) -> None:
        self._checks[name] = check

    def set(self, name: str, ok: bool, detail: str | None = None) -> None:
        """Record a value-style check, e.g. ``set("kafka_connected", False, "broker down")``."""
        result: CheckResult = (ok, detail)
        self._checks[name] = lambda: result

    def unregister(self, name: str) -> None:
        self._checks.pop(name, None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._checks)

    def readiness(self) -> Readiness:
        return Readiness(tuple(_evaluate(name, check) for name, check in self._checks.items()))

    # Liveness: the process answers unless something declared it broken beyond repair.
    def mark_dead(self, reason: str) -> None:
        self._dead = reason

    @property
    def alive(self) -> bool:
        return self._dead is None

    @property
    def dead_reason(self) -> str | None:
        return self._dead


def _evaluate(name: str, check: Check) -> CheckStatus:
    try:
        result = check()
    except Exception as exc:  # a broken check must not break /readyz
        return CheckStatus(name, False, f"check raised {type(exc).__name__}")
    if isinstance(result, tuple):
        ok, detail = result
        return CheckStatus(name, bool(ok), detail)
    return CheckStatus(name, bool(result))
