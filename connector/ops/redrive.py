"""``order-connector redrive``: re-publish selected error records (original key, value and
headers) to the input, each error record at most once.

Owns the redrive log (a compacted topic); never sends to providers itself.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from connector.config import ConnectorConfig
from connector.contract.topics import TopicSpec
from connector.core.personal_data import OriginalValuePolicy, OriginalValueSealError, unseal
from connector.errors import ErrorClass
from connector.kafka.admin import KafkaAdmin, TopicAdminError
from connector.kafka.connection import client_kwargs
from connector.kafka.consumer import read_topic
from connector.kafka.producer import KafkaProducer
from connector.ops import command

_DESCRIPTION = (
    "Re-publish error records (original key, value and headers) to the input after a fix; "
    "an error record is never re-driven twice. Prints progress to stderr and a JSON summary "
    "to stdout."
)
REDRIVE_HEADER = "x-redriven-from"
# redrive()'s keyword arguments, each taken from the command-line option of the same dest.
_OPTIONS = ("classes", "providers", "since_ms", "until_ms", "log_topic", "dry_run")


def redrive_selects(
    error: dict[str, Any],
    classes: set[str],
    providers: set[str],
    since_ms: int | None,
    until_ms: int | None,
) -> bool:
    if classes and error.get("error_class") not in classes:
        return False
    if (
        providers
        and error.get("provider") not in providers
        and error.get("account") not in providers
    ):
        return False
    if error.get("original_value") is None or error.get("source") is None:
        return False  # nothing to re-drive (asynchronous provider errors have no input record)
    if error.get("original_value_truncated"):
        return False  # only a prefix was kept: re-publishing it would be a broken event
    at = int(datetime.fromisoformat(error["recorded_at"]).timestamp() * 1000)
    if since_ms is not None and at < since_ms:
        return False
    return until_ms is None or at <= until_ms


REFUSED_REDACTED = "refused_redacted"
REFUSED_UNDECRYPTABLE = "refused_undecryptable"


def original_value_of(error: dict[str, Any], policy: OriginalValuePolicy) -> bytes | str:
    """The input value to re-publish, or why it cannot be (``errors.original_value``).

    ``redacted`` values had their phones and emails masked: re-publishing them would send a
    broken event, so they are refused. ``encrypted`` values are opened with the configured key.
    """
    kept = base64.b64decode(error["original_value"])
    protection = error.get("original_value_protection")
    if protection == "redacted":
        return REFUSED_REDACTED
    if protection == "encrypted":
        if policy.key is None:
            return REFUSED_UNDECRYPTABLE
        try:
            return unseal(kept, policy.key)
        except OriginalValueSealError:
            return REFUSED_UNDECRYPTABLE
    return kept


async def _ensure_log_topic(config: ConnectorConfig, topic: str) -> None:
    """Create the compacted redrive log if missing, replicated like the errors topic."""
    options = client_kwargs(config.kafka)
    bootstrap = options.pop("bootstrap_servers")
    options.pop("client_id", None)
    async with KafkaAdmin(bootstrap, **options) as admin:
        if topic in await admin.list_topics():
            return
        errors = (await admin.describe_topics([config.topics.errors])).get(config.topics.errors)
        await admin.create_topics(
            [
                TopicSpec(
                    logical_name=topic,
                    name=topic,
                    role="state",
                    key="errors topic:partition:offset",
                    partitions=1,
                    replication_factor=errors.replication_factor if errors else 1,
                    configs={"cleanup.policy": "compact"},
                )
            ]
        )
        await admin.wait_for_topics([topic])


def _source_order(item: tuple[bytes, dict[str, Any]]) -> tuple[str, int, int]:
    source = item[1].get("source") or {}
    return (
        str(source.get("topic", "")),
        int(source.get("partition", -1)),
        int(source.get("offset", -1)),
    )


async def redrive(
    config: ConnectorConfig,
    *,
    classes: Iterable[str] = (),
    providers: Iterable[str] = (),
    since_ms: int | None = None,
    until_ms: int | None = None,
    log_topic: str | None = None,
    dry_run: bool = False,
    out: TextIO | None = None,
) -> Counter[str]:
    """Re-publish matching error records to the input, each error record at most once.

    The redrive log (compacted, key = ``errors-topic:partition:offset``) remembers what was
    re-driven; the input copy carries the same coordinates in the ``x-redriven-from`` header.
    Input records are acknowledged before their log entries are written: a crash in between
    re-drives them again, and the ledger then reports a delivered copy as skipped_duplicate.
    """
    log_topic = log_topic or f"{config.topics.errors}.redrive-log"
    await _ensure_log_topic(config, log_topic)
    done = {
        r.key
        for r in await read_topic(
            config.kafka, log_topic, idle_timeout_s=1.0, isolation_level="read_committed"
        )
        if r.key
    }
    say = (lambda text: print(text, file=out, flush=True)) if out is not None else None
    if say is not None:
        say(f"redrive: reading {config.topics.errors}")
    errors = await read_topic(
        config.kafka, config.topics.errors, idle_timeout_s=1.0, isolation_level="read_committed"
    )
    wanted_classes, wanted_providers = set(classes), set(providers)
    policy = config.errors.policy()
    counts: Counter[str] = Counter()
    picked: list[tuple[bytes, dict[str, Any]]] = []
    for record in errors:
        counts["errors_read"] += 1
        try:
            error = orjson.loads(record.value or b"{}")
        except orjson.JSONDecodeError:
            counts["unreadable"] += 1
            continue
        if not redrive_selects(error, wanted_classes, wanted_providers, since_ms, until_ms):
            continue
        coords = f"{record.topic}:{record.partition}:{record.offset}".encode()
        if coords in done:
            counts["already_redriven"] += 1
            continue
        value = original_value_of(error, policy)
        if isinstance(value, str):  # redacted, or encrypted under a key we do not have
            counts[value] += 1
            continue
        error["original_value"] = base64.b64encode(value).decode("ascii")
        counts["selected"] += 1
        picked.append((coords, error))
    # Re-drive in the order of the original input records, so each order's events reach the
    # input topic again in their own order whatever order their errors were published in.
    picked.sort(key=_source_order)
    if say is not None:
        say(
            f"redrive: read {counts['errors_read']} error records, selected {counts['selected']}"
            f", {counts['already_redriven']} already re-driven"
        )
    if dry_run or not picked:
        counts["redriven"] += 0
        return counts
    await _publish(config, picked, log_topic, out)
    counts["redriven"] += len(picked)
    return counts


def _input_copy(
    coords: bytes, error: dict[str, Any]
) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """Key, value and headers of the original input record, marked with where it came from."""
    key = base64.b64decode(error["original_key"]) if error.get("original_key") else None
    value = base64.b64decode(error["original_value"])
    headers = [
        (h["key"], base64.b64decode(h["value"]) if h.get("value") else b"")
        for h in error.get("original_headers", [])
        if h["key"] != REDRIVE_HEADER
    ]
    headers.append((REDRIVE_HEADER, coords))
    return key, value, headers


async def _publish(
    config: ConnectorConfig,
    picked: list[tuple[bytes, dict[str, Any]]],
    log_topic: str,
    out: TextIO | None,
) -> None:
    """The input copies first (acknowledged), then their redrive log entries."""
    progress = command.ProgressLine(out, len(picked), "re-driven") if out is not None else None
    producer = KafkaProducer(config.kafka)
    await producer.start()
    try:
        acks = []
        for coords, error in picked:
            key, value, headers = _input_copy(coords, error)
            acks.append(await producer.send(config.topics.input, value, key=key, headers=headers))
            if progress is not None:
                progress.update(len(acks) - 1)
        await asyncio.gather(*acks)
        if progress is not None:
            progress.finish(len(acks))
        now = orjson.dumps({"redriven_at": datetime.now(UTC).isoformat()})
        await asyncio.gather(
            *[await producer.send(log_topic, now, key=coords) for coords, _ in picked]
        )
    finally:
        await producer.stop()


def _explain_refusals(counts: Counter[str]) -> None:
    if counts[REFUSED_REDACTED]:
        print(
            f"redrive: refused {counts[REFUSED_REDACTED]} error records whose original value was"
            " redacted (errors.original_value: redact masks phone numbers and emails, so the"
            " event cannot be re-published); re-send those orders from the source system",
            file=sys.stderr,
        )
    if counts[REFUSED_UNDECRYPTABLE]:
        print(
            f"redrive: refused {counts[REFUSED_UNDECRYPTABLE]} encrypted error records that do"
            " not decrypt with errors.encryption_key (none configured, or another key)",
            file=sys.stderr,
        )


def redrive_parser() -> argparse.ArgumentParser:
    parser = command.command_parser("order-connector redrive", _DESCRIPTION)
    parser.add_argument(
        "--class",
        dest="classes",
        action="append",
        default=[],
        choices=[c.value for c in ErrorClass],
        metavar="CLASS",
        help="only errors of this class (repeatable): " + ", ".join(c.value for c in ErrorClass),
    )
    parser.add_argument(
        "--provider",
        dest="providers",
        action="append",
        default=[],
        help="provider kind or account name (repeatable)",
    )
    for name, bound in (("since", "after"), ("until", "before")):
        help_text = f"errors recorded at or {bound} (ISO)"
        command.add_time_option(
            parser, f"--{name}", help_text, dest=f"{name}_ms", metavar=name.upper()
        )
    parser.add_argument(
        "--log-topic",
        default=None,
        metavar="TOPIC",
        help="the compacted log of what was re-driven (default: <errors topic>.redrive-log)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="count what would be re-driven, publish nothing"
    )
    return parser


def redrive_main(argv: list[str]) -> int:
    parser = redrive_parser()
    args, config = command.parse_command_line(parser, argv)
    try:
        counts = asyncio.run(
            redrive(config, **{name: getattr(args, name) for name in _OPTIONS}, out=sys.stderr)
        )
    except TopicAdminError as exc:
        print(f"order-connector redrive: failed: {command.one_line(str(exc))}", file=sys.stderr)
        return 1
    except Exception as exc:  # one line for the operator, never a traceback
        print(command.failure_line(parser.prog, exc, config.secret_values()), file=sys.stderr)
        return 1
    did = (
        f"would re-drive {counts['selected']} (dry run)"
        if args.dry_run
        else f"re-drove {counts['redriven']}"
    )
    print(
        f"redrive: read {counts['errors_read']} error records, selected {counts['selected']}, "
        f"{did}, skipped {counts['already_redriven']} already re-driven",
        file=sys.stderr,
    )
    _explain_refusals(counts)
    print(orjson.dumps(dict(sorted(counts.items()))).decode())
    return 0
