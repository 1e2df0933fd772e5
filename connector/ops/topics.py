"""`order-connector topics ...`: apply the topic contracts (the packaged topics.yaml) to a cluster.

Owns argument parsing and exit codes only; loading, planning and cluster calls live in
`connector.contract.topics` and `connector.kafka.admin`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from connector.contract.topics import TopicPlan, TopicSpecError, TopicsSpec, load_spec, render_plan
from connector.kafka.admin import TopicAdminError, apply_topics
from connector.ops.command import CommandParser, one_line

EXIT_OK = 0
EXIT_DRIFT = 3  # applied (or planned), but the cluster still differs from the spec
EXIT_ERROR = 1
RETRY_INTERVAL_S = 1.0  # between connection attempts while --wait-s lasts


_DESCRIPTION = (
    "Create the connector's Kafka topics from the topic contracts shipped in the package and "
    "report how existing ones differ. Exit 0 when the cluster matches, 3 when differences "
    "remain, 1 on an error."
)


def topics_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="order-connector topics", description=_DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{apply}")
    apply_help = "create missing topics and report drift in existing ones (idempotent)"
    apply = sub.add_parser("apply", help=apply_help, description=apply_help)
    apply.add_argument(
        "--bootstrap-servers",
        required=True,
        metavar="HOST:PORT[,...]",
        help="the Kafka cluster to apply the contracts to",
    )
    apply.add_argument(
        "--spec",
        type=Path,
        default=None,
        help="a topics.yaml to apply instead of the spec shipped in the package",
    )
    apply.add_argument("--dry-run", action="store_true", help="only show what would change")
    apply.add_argument(
        "--wait-s",
        type=float,
        default=0.0,
        help="keep retrying this long while the cluster cannot be reached (init containers)",
    )
    apply.add_argument(
        "--fix-drift",
        action="store_true",
        help="reset drifted topic configs to the spec (partition/replication drift is only shown)",
    )
    apply.add_argument(
        "--replication-factor",
        type=int,
        default=None,
        help="override the spec's replication factor (1 for a single-broker dev cluster)",
    )
    apply.add_argument("--prefix", default="", help="prepend to every real topic name")
    apply.add_argument("--suffix", default="", help="append to every real topic name")
    apply.add_argument(
        "--name",
        action="append",
        default=[],
        metavar="LOGICAL=REAL",
        help="map a logical topic name to a real one (repeatable)",
    )
    return parser


def _names(pairs: list[str]) -> dict[str, str]:
    names: dict[str, str] = {}
    for pair in pairs:
        logical, sep, real = pair.partition("=")
        if not sep or not logical or not real:
            raise TopicSpecError(f"--name expects LOGICAL=REAL, got {pair!r}")
        names[logical] = real
    return names


async def _apply_waiting(args: argparse.Namespace, spec: TopicsSpec) -> TopicPlan:
    """`apply_topics`, retried while the cluster cannot be reached and --wait-s is not over."""
    deadline = time.monotonic() + args.wait_s
    names = _names(args.name)
    while True:
        try:
            return await apply_topics(
                args.bootstrap_servers,
                spec,
                dry_run=args.dry_run,
                fix_drift=args.fix_drift,
                names=names,
                prefix=args.prefix,
                suffix=args.suffix,
                replication_factor=args.replication_factor,
            )
        except TopicAdminError as error:
            if error.operation != "connect to" or time.monotonic() >= deadline:
                raise
            print(f"topics {args.command}: cluster not reachable yet, retrying", file=sys.stderr)
            await asyncio.sleep(RETRY_INTERVAL_S)


def topics_main(argv: list[str]) -> int:
    """Run `topics apply ...`; exit 0 when the cluster matches the spec, 3 on remaining drift."""
    args = topics_parser().parse_args(argv)
    try:
        spec = load_spec(args.spec)
        result = asyncio.run(_apply_waiting(args, spec))
    except (OSError, ValueError, KeyError, TopicAdminError) as error:
        print(f"order-connector topics {args.command}: {one_line(str(error))}", file=sys.stderr)
        return EXIT_ERROR
    print(render_plan(result))
    remaining = [d for d in result.drifts if d not in set(result.fixed)]
    return EXIT_DRIFT if remaining else EXIT_OK


if __name__ == "__main__":
    sys.exit(topics_main(sys.argv[1:]))
