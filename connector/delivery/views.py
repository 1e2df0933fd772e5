"""The delivery engine's public surface for the app, health checks and metrics: read-only views
of its parts and the template holds the webhooks drive. No logic of its own; ``Engine`` inherits it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from connector.delivery.flow import Flow
    from connector.delivery.holds import Holds
    from connector.delivery.jobs import Buffers, PartitionProgress, PartitionState
    from connector.delivery.outage import PublishGate
    from connector.delivery.outcomes import Outcomes
    from connector.kafka.consumer import TP
    from connector.providers.base import TemplateKey


class EngineViews:
    """What the engine shows of its state; the attributes are the engine's parts."""

    _states: dict[TP, PartitionState]
    _holds: Holds
    _flow: Flow
    _buffers: Buffers
    _gate: PublishGate
    _outcomes: Outcomes

    @property
    def stopped_accounts(self) -> dict[str, str]:
        return {name: hold.reason for name, hold in self._holds.accounts.items()}

    @property
    def accounts_in_outage(self) -> dict[str, float]:
        """Accounts whose breaker is open (their sends park), with how long, in seconds."""
        now = time.monotonic()
        return {name: now - since for name, since in self._flow.outages().items()}

    @property
    def flow(self) -> Flow:
        """Flow control state (breakers, adaptive rates, ambiguity counts): for tests, metrics."""
        return self._flow

    @property
    def held_templates(self) -> dict[TemplateKey, str]:
        """Templates whose sends are parked, with the reason."""
        return {key: hold.reason for key, hold in self._holds.templates.items()}

    @property
    def assigned(self) -> set[TP]:
        return {tp for tp, s in self._states.items() if not s.draining}

    @property
    def buffered_records(self) -> int:
        """Records taken in whose outcome is not acknowledged yet (backpressure's measure)."""
        return self._buffers.records

    def backlog(self) -> dict[TP, int]:
        """Per assigned partition: records taken in (or held while its ledger loads) whose
        outcome is not acknowledged yet. Zero means every record returned so far is done."""
        return {
            tp: s.tracker.outstanding + len(s.held or ())
            for tp, s in self._states.items()
            if not s.draining
        }

    @property
    def commit_pending(self) -> bool:
        """Whether some assigned partition's commit point moved past its last commit."""
        return any(s.tracker.needs_commit for s in self._states.values() if not s.draining)

    def hold_template(self, name: str, language: str | None, reason: str) -> None:
        """Park sends that use template ``name`` (``language`` None: every language)."""
        self._holds.hold_template(name, language, reason)

    def release_template(self, name: str, language: str | None, *, reason: str) -> None:
        """Resume template ``name`` and its parked sends: ``language`` None resumes every
        language; a language resumes its own hold and an every-language hold."""
        self._holds.release_template(name, language, reason=reason)

    def limit_error_records(self, max_bytes: int) -> None:
        """Cut error records to ``max_bytes`` (what the errors topic and producer accept,
        ``connector.kafka.admin.read_publish_limits``); set once at start."""
        self._outcomes.error_record_max_bytes = max_bytes

    @property
    def publish_outage_s(self) -> float | None:
        """Seconds outcomes have waited for the broker, when that passed
        ``limits.publish_outage_s`` (dispatch is paused); None while publishing works."""
        return self._gate.outage_s

    def progress(self) -> dict[TP, PartitionProgress]:
        """Per assigned partition: the age of its oldest unfinished record and how long its
        commit point has stood still while records wait (the commit-stall signals)."""
        now = time.monotonic()
        return {tp: s.progress(now) for tp, s in self._states.items() if not s.draining}
