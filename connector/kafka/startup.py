"""Start-up preflight against the cluster: wait for a broker, then check every topic we use.

Runs before any consumer or producer starts, so a wrong topic name or an absent broker ends
the process with one clear line instead of a running daemon that cannot record outcomes.
Owns no retry policy for runtime failures; those belong to the clients and the engine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from connector.errors import ConfigError
from connector.kafka.admin import KafkaAdmin, TopicAdminError
from connector.kafka.connection import client_kwargs
from connector.logs import silenced

if TYPE_CHECKING:
    from connector.config import KafkaSettings

# Credentials or mechanism refused: waiting cannot fix that, so it is a configuration error.
_AUTH_ERRORS: Final = (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
_NO_ERROR: Final = 0
_TOPIC_AUTHORIZATION_FAILED: Final = 29


class BrokerUnreachableError(RuntimeError):
    """No broker answered within ``kafka.startup_timeout_s`` (a runtime failure: exit 1)."""


@dataclass(frozen=True, slots=True)
class BrokerAttempt:
    """One failed attempt to reach the cluster, for the caller's one log line."""

    attempt: int
    error: str
    elapsed_s: float
    retry_in_s: float


def backoff_delays(first_s: float = 0.5, cap_s: float = 5.0) -> Callable[[int], float]:
    """Delay after failed attempt ``n`` (1-based): doubling from ``first_s`` up to ``cap_s``."""

    def delay(attempt: int) -> float:
        return float(min(cap_s, first_s * 2 ** min(attempt - 1, 30)))

    return delay


def _admin(settings: KafkaSettings, *, request_timeout_ms: int) -> KafkaAdmin:
    options = client_kwargs(settings)
    bootstrap = options.pop("bootstrap_servers")
    options.pop("client_id", None)
    return KafkaAdmin(bootstrap, request_timeout_ms=request_timeout_ms, **options)


async def wait_for_broker(
    settings: KafkaSettings,
    *,
    on_attempt: Callable[[BrokerAttempt], None],
    delay: Callable[[int], float] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Return once a broker answers a metadata request; retry with backoff until
    ``settings.startup_timeout_s``, calling ``on_attempt`` after each failed attempt.

    aiokafka's own connection errors are silenced meanwhile (``on_attempt`` is the one line).
    Raises ``BrokerUnreachableError`` when the time is up, and ``ConfigError`` at once when
    the cluster refuses our credentials.
    """
    delay = delay or backoff_delays()
    timeout_s = settings.startup_timeout_s
    started = clock()
    attempt = 0
    while True:
        attempt += 1
        remaining = timeout_s - (clock() - started)
        per_attempt_s = max(0.5, min(10.0, remaining))
        try:
            with silenced("aiokafka"):
                async with asyncio.timeout(per_attempt_s):
                    admin = _admin(settings, request_timeout_ms=int(per_attempt_s * 1000))
                    async with admin:
                        await admin.list_topics()
        except (TopicAdminError, KafkaError, OSError, TimeoutError) as exc:
            refused = _auth_refusal(exc)
            if refused is not None:
                raise ConfigError(
                    f"the Kafka cluster at {settings.bootstrap_servers} refused our credentials "
                    f"(kafka.security_protocol/sasl_*): {_short(refused)}"
                ) from exc
            error = _short(exc)
        else:
            return
        elapsed = clock() - started
        remaining = timeout_s - elapsed
        if remaining <= 0:
            raise BrokerUnreachableError(
                f"no Kafka broker answered at {settings.bootstrap_servers} within "
                f"{timeout_s:g} s (kafka.startup_timeout_s), {attempt} attempts; last: {error}"
            )
        wait_s = min(delay(attempt), remaining)
        on_attempt(BrokerAttempt(attempt, error, round(elapsed, 2), round(wait_s, 2)))
        await asyncio.sleep(wait_s)


def _auth_refusal(exc: BaseException) -> BaseException | None:
    """The authentication error in ``exc``'s cause chain, if any."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, _AUTH_ERRORS):
            found: BaseException = seen  # aiokafka is untyped: keep Any out of our signature
            return found
        seen = seen.__cause__ or seen.__context__
    return None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


async def check_topics(
    settings: KafkaSettings,
    required: Mapping[str, str],
    *,
    co_partitioned: tuple[str, str] | None = None,
    timeout_s: float = 30.0,
) -> dict[str, int]:
    """Check that every topic in ``required`` (role -> name) exists and can be described.

    Returns the partition count per topic name. Raises ``ConfigError`` naming the first
    problem: a missing topic, one we are not authorized for, or (``co_partitioned`` =
    (input role, ledger role)) a ledger whose partition count differs from the input's.

    Whether a topic is *writable* cannot be asked directly: aiokafka 0.14 speaks Metadata up
    to v5, and topic authorized operations arrived in v8 (KIP-430). A principal without
    Describe on a topic does not see it listed (reported as missing) or gets
    TOPIC_AUTHORIZATION_FAILED; one with Describe but without Write is only found out by the
    first publish.
    """
    names = sorted(set(required.values()))
    try:
        async with asyncio.timeout(timeout_s):
            async with _admin(settings, request_timeout_ms=int(timeout_s * 1000)) as admin:
                codes, partitions = await _describe(admin, names)
    except TimeoutError:
        raise BrokerUnreachableError(
            f"the broker did not describe topics within {timeout_s:g} s"
        ) from None
    for role, name in required.items():
        if name not in codes:
            raise ConfigError(
                f"{role} topic {name!r} (topics.{role}) does not exist on "
                f"{settings.bootstrap_servers} (or this principal may not Describe it); "
                "create it with 'order-connector topics apply' or fix the name"
            )
        code = codes[name]
        if code == _TOPIC_AUTHORIZATION_FAILED:
            raise ConfigError(
                f"{role} topic {name!r} (topics.{role}) is not authorized for this principal "
                "(TOPIC_AUTHORIZATION_FAILED): grant Describe and Write on it"
            )
        if code != _NO_ERROR or not partitions.get(name):
            raise ConfigError(
                f"{role} topic {name!r} (topics.{role}) is not usable: error code {code}"
            )
    if co_partitioned is not None:
        input_role, ledger_role = co_partitioned
        input_name, ledger_name = required[input_role], required[ledger_role]
        want, have = partitions[input_name], partitions[ledger_name]
        if have != want:
            raise ConfigError(
                f"{ledger_role} topic {ledger_name!r} has {have} partitions but {input_role} "
                f"{input_name!r} has {want}: they must be co-partitioned (same count, same key) "
                "so that the owner of input partition p restores ledger partition p"
            )
    return {name: count for name, count in partitions.items() if name in names}


async def _describe(admin: KafkaAdmin, names: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    """Error code and partition count per listed topic (never creates one)."""
    described = await admin.describe_topic_metadata(names)
    codes = {name: code for name, (code, _count) in described.items()}
    partitions = {name: count for name, (_code, count) in described.items()}
    return codes, partitions
