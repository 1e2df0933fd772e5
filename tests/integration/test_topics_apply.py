"""`topics apply` against the real broker: idempotent, and drift is reported (and fixable)."""

from __future__ import annotations

import anyio
import pytest

from connector.contract.topics import DriftKind, TopicsSpec
from connector.kafka.admin import KafkaAdmin, apply_topics, ensure_topic
from connector.ops.topics import EXIT_DRIFT, EXIT_OK, topics_main
from tests.support.paths import TOPICS_SPEC_PATH

pytestmark = pytest.mark.integration


async def test_apply_twice_creates_once_and_then_changes_nothing(
    kafka_bootstrap: str, topics_spec: TopicsSpec
) -> None:
    with anyio.fail_after(60):
        dry = await apply_topics(kafka_bootstrap, topics_spec, dry_run=True)
        first = await apply_topics(kafka_bootstrap, topics_spec, dry_run=False)
        second = await apply_topics(kafka_bootstrap, topics_spec, dry_run=False)
        async with KafkaAdmin(kafka_bootstrap) as admin:
            states = await admin.describe_topics(t.name for t in topics_spec.topics.values())

    names = {t.name for t in topics_spec.topics.values()}
    assert {t.name for t in dry.creates} == names
    assert dry.dry_run
    assert {t.name for t in first.creates} == names
    assert first.drifts == ()
    assert second.creates == ()
    assert second.drifts == ()
    assert set(second.unchanged) == names
    assert second.is_noop
    ledger = states[topics_spec.name_of("order.status.ledger")]
    changed = states[topics_spec.name_of("order.status.changed")]
    assert ledger.partitions == changed.partitions == 12
    assert ledger.overrides["cleanup.policy"] == "compact"
    assert changed.overrides["retention.ms"] == "604800000"


async def test_drifted_topic_is_reported_and_configs_fixed_on_request(
    kafka_bootstrap: str, topics_spec: TopicsSpec
) -> None:
    results = topics_spec.name_of("order.status.results")
    with anyio.fail_after(60):
        # Someone created the results topic by hand: too few partitions, short retention.
        await ensure_topic(
            kafka_bootstrap,
            results,
            partitions=3,
            configs={"retention.ms": "3600000", "segment.bytes": "10485760"},
        )
        reported = await apply_topics(kafka_bootstrap, topics_spec, dry_run=False)
        fixed = await apply_topics(kafka_bootstrap, topics_spec, dry_run=False, fix_drift=True)
        after = await apply_topics(kafka_bootstrap, topics_spec, dry_run=True)
        async with KafkaAdmin(kafka_bootstrap) as admin:
            state = (await admin.describe_topics([results]))[results]

    assert results not in {t.name for t in reported.creates}
    drifts = {(d.kind, d.key): d for d in reported.drifts if d.topic == results}
    assert drifts[(DriftKind.PARTITIONS, "partitions")].expected == "12"
    assert drifts[(DriftKind.PARTITIONS, "partitions")].actual == "3"
    assert not drifts[(DriftKind.PARTITIONS, "partitions")].fixable
    assert drifts[(DriftKind.CONFIG, "retention.ms")].actual == "3600000"
    assert drifts[(DriftKind.CONFIG, "retention.ms")].fixable
    assert {d.key for d in fixed.fixed} == {"retention.ms"}
    # Configs were reset (the hand-set segment.bytes override kept); partitions only reported.
    assert state.configs["retention.ms"] == "1209600000"
    assert state.overrides["segment.bytes"] == "10485760"
    assert [(d.topic, d.kind) for d in after.drifts] == [(results, DriftKind.PARTITIONS)]


def test_topics_cli_apply_then_dry_run_reports_nothing_to_do(
    kafka_bootstrap: str, unique_name: object, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"{unique_name('cli')}."  # type: ignore[operator]
    argv = [
        "apply",
        "--bootstrap-servers",
        kafka_bootstrap,
        # no --spec: the spec shipped in the package (what a wheel-only install applies)
        "--replication-factor",
        "1",
        "--prefix",
        prefix,
    ]
    assert topics_main(argv) == EXIT_OK
    first = capsys.readouterr().out
    assert topics_main([*argv, "--dry-run"]) == EXIT_OK
    second = capsys.readouterr().out
    assert f"created      {prefix}order.status.changed partitions=12" in first
    assert "5 to create, 0 drifted, 0 unchanged" in first
    assert "0 to create, 0 drifted, 5 unchanged (dry run)" in second


def test_topics_cli_exit_code_signals_remaining_drift(
    kafka_bootstrap: str, topics_spec: TopicsSpec, capsys: pytest.CaptureFixture[str]
) -> None:
    errors = topics_spec.name_of("order.status.errors")
    anyio.run(ensure_topic, kafka_bootstrap, errors)
    prefix = errors.removesuffix("order.status.errors")
    code = topics_main(
        [
            "apply",
            "--bootstrap-servers",
            kafka_bootstrap,
            "--spec",
            str(TOPICS_SPEC_PATH),
            "--replication-factor",
            "1",
            "--prefix",
            prefix,
            "--dry-run",
        ]
    )
    out = capsys.readouterr().out
    assert code == EXIT_DRIFT
    assert f"drift        {errors} partitions: expected 12, found 1" in out
