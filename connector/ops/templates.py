"""``order-connector templates ensure|status``: the order-status templates of each Meta and
YCloud account, compared with the configuration, created where missing (never twice).

Owns what is wanted per account, the HTTP round trips (one small httpx client) and the table;
the requests themselves are built and read by ``connector.providers.template_api``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TextIO

import httpx

from connector.config import ConnectorConfig, load_config
from connector.core.redaction import SecretScrubber
from connector.errors import ConfigError
from connector.ops.command import CommandParser
from connector.providers import MetaAccount, YCloudAccount
from connector.providers.template_api import (
    USABLE_STATUSES,
    WAITING_STATUSES,
    RemoteTemplate,
    TemplateAccount,
    TemplateApiError,
    TemplateVariant,
    create_request,
    list_request,
    parse_create,
    parse_list,
)

EXIT_OK: Final = 0
EXIT_PROBLEM: Final = 1  # a template is missing, paused or disabled, or a provider call failed
EXIT_CONFIG: Final = 2
MISSING: Final = "MISSING"
NO_TEXT: Final = "no text in config (templates:)"
MAX_PAGES: Final = 100  # 10,000 templates per account: far beyond any real WABA


@dataclass(frozen=True, slots=True)
class WantedTemplate:
    """A (name, locale) an account uses or should have; ``variant`` None: no text configured."""

    name: str
    locale: str
    variant: TemplateVariant | None


@dataclass(frozen=True, slots=True)
class TemplateRow:
    """One line of the table."""

    account: str
    provider: str
    name: str
    locale: str
    status: str
    action: str

    @property
    def blocked(self) -> bool:
        """Sends with this template fail: missing, paused, disabled, rejected, deleted..."""
        return self.status not in USABLE_STATUSES and self.status not in WAITING_STATUSES


@dataclass(slots=True)
class AccountReport:
    """What one account's templates look like (rows), or why they could not be read."""

    account: str
    provider: str
    rows: list[TemplateRow] = field(default_factory=list)
    error: str | None = None


def template_accounts(config: ConnectorConfig) -> list[TemplateAccount]:
    """The accounts that send WhatsApp templates (Meta and YCloud), in config order."""
    return [a for a in config.accounts if isinstance(a, MetaAccount | YCloudAccount)]


def wanted_templates(config: ConnectorConfig, account: TemplateAccount) -> list[WantedTemplate]:
    """The configured variants for ``account`` plus the template it sends by default."""
    wanted: dict[tuple[str, str], WantedTemplate] = {}
    texts: dict[tuple[str, str], TemplateVariant] = {}
    for template in config.templates:
        for text in template.variants:
            variant = TemplateVariant(template.name, text.locale, text.body, text.footer)
            texts.setdefault((template.name, text.locale), variant)
            if template.accounts is None or account.name in template.accounts:
                wanted.setdefault(
                    (template.name, text.locale),
                    WantedTemplate(template.name, text.locale, variant),
                )
    if account.template_name:
        key = (account.template_name, account.language)
        wanted.setdefault(key, WantedTemplate(*key, texts.get(key)))
    return list(wanted.values())


async def list_account_templates(
    client: httpx.AsyncClient, account: TemplateAccount
) -> dict[tuple[str, str], RemoteTemplate]:
    """Every template of the account's WABA by (name, language), following the pages."""
    found: dict[tuple[str, str], RemoteTemplate] = {}
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        response = await _send(client, account, list_request(account, cursor))
        page = parse_list(account, response, cursor)
        for template in page.templates:
            found[(template.name, template.language)] = template
        cursor = page.next_cursor
        if cursor is None:
            break
    return found


async def _send(
    client: httpx.AsyncClient, account: TemplateAccount, request: httpx.Request
) -> httpx.Response:
    try:
        response = await client.send(request)
        await response.aread()
    except httpx.HTTPError as exc:
        where = f"{request.url.scheme}://{request.url.host}:{request.url.port or ''}"
        raise TemplateApiError(
            f"{account.provider} unreachable at {where}: {type(exc).__name__} {exc}"
        ) from None
    return response


async def account_report(
    client: httpx.AsyncClient,
    config: ConnectorConfig,
    account: TemplateAccount,
    *,
    create: bool,
    dry_run: bool,
) -> AccountReport:
    """List the account's templates and, with ``create``, create the missing variants."""
    report = AccountReport(account.name, account.provider)
    wanted = wanted_templates(config, account)
    if not wanted:
        report.error = (
            "uses no template: set template_name on the account or add a templates: entry"
        )
        return report
    try:
        remote = await list_account_templates(client, account)
        for item in wanted:
            existing = remote.get((item.name, item.locale))
            if existing is not None:
                report.rows.append(_row(account, item, existing.status, "exists"))
            elif item.variant is None:
                report.rows.append(_row(account, item, MISSING, "no text in config (templates:)"))
            elif not create:
                report.rows.append(_row(account, item, MISSING, "-"))
            elif dry_run:
                report.rows.append(_row(account, item, MISSING, "would create"))
            else:
                response = await _send(client, account, create_request(account, item.variant))
                made = parse_create(account, response, item.variant)
                remote[(item.name, item.locale)] = made
                report.rows.append(_row(account, item, made.status, "created"))
    except TemplateApiError as exc:
        report.error = str(exc)
    return report


def _row(account: TemplateAccount, item: WantedTemplate, status: str, action: str) -> TemplateRow:
    return TemplateRow(account.name, account.provider, item.name, item.locale, status, action)


async def collect_reports(
    config: ConnectorConfig,
    accounts: list[TemplateAccount],
    *,
    create: bool,
    dry_run: bool,
    timeout_s: float,
) -> list[AccountReport]:
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        return [
            await account_report(client, config, account, create=create, dry_run=dry_run)
            for account in accounts
        ]


HEADERS: Final = ("ACCOUNT", "PROVIDER", "NAME", "LOCALE", "STATUS", "ACTION")


def render_table(rows: list[TemplateRow]) -> str:
    cells = [HEADERS] + [
        (r.account, r.provider, r.name, r.locale, r.status, r.action) for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADERS))]
    return "\n".join(
        "  ".join(value.ljust(widths[i]) for i, value in enumerate(row)).rstrip() for row in cells
    )


def templates_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="order-connector templates",
        description=(
            "Order-status WhatsApp templates (category UTILITY, sub-category ORDER_STATUS) of "
            "each Meta and YCloud account. Exit 0 ok, 1 a template is missing, paused or "
            "disabled (status) or a provider call failed, 2 configuration or usage error."
        ),
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="{ensure,status}")
    for name, text in (
        ("ensure", "create the missing template variants from the config, then show the table"),
        ("status", "show every template the config uses; change nothing"),
    ):
        command = sub.add_parser(name, help=text, description=text)
        command.add_argument(
            "--config", type=Path, required=True, help="the connector's YAML or TOML config"
        )
        command.add_argument(
            "--account",
            action="append",
            default=[],
            metavar="NAME",
            help="only this Meta or YCloud account (repeatable; default: all of them)",
        )
        command.add_argument(
            "--timeout",
            type=float,
            default=15.0,
            metavar="SECONDS",
            help="per-request timeout for provider calls (default: 15)",
        )
        if name == "ensure":
            command.add_argument(
                "--dry-run",
                action="store_true",
                help="list and compare only: show what would be created, create nothing",
            )
    return parser


def _say(stream: TextIO, line: str) -> None:
    print(line, file=stream, flush=True)


def templates_main(argv: list[str]) -> int:
    """Run ``templates ensure|status``; see the parser's description for the exit codes."""
    args = templates_parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        _say(sys.stderr, f"order-connector: configuration invalid: {exc}")
        return EXIT_CONFIG
    accounts = template_accounts(config)
    if args.account:
        known = {a.name for a in accounts}
        unknown = [n for n in args.account if n not in known]
        if unknown:
            _say(
                sys.stderr,
                f"order-connector: templates: --account {', '.join(unknown)}: not a Meta or "
                f"YCloud account in {args.config} (known: {', '.join(sorted(known)) or 'none'})",
            )
            return EXIT_CONFIG
        accounts = [a for a in accounts if a.name in args.account]
    if not accounts:
        _say(sys.stderr, "order-connector: templates: the config has no Meta or YCloud account")
        return EXIT_CONFIG
    create = args.action == "ensure"
    dry_run = create and args.dry_run
    reports = asyncio.run(
        collect_reports(config, accounts, create=create, dry_run=dry_run, timeout_s=args.timeout)
    )
    scrubber = SecretScrubber(config.secret_values(), min_length=4)
    rows = [row for report in reports for row in report.rows]
    if rows:
        _say(sys.stdout, render_table(rows))
    failed = False
    for report in reports:
        if report.error is not None:
            failed = True
            _say(
                sys.stderr,
                scrubber.scrub_text(
                    f"order-connector: templates: account {report.account} "
                    f"({report.provider}): {' '.join(report.error.split())}"
                ),
            )
    blocked = [r for r in rows if r.blocked]
    if create:
        # ensure fails when it cannot make the config true: a used variant without text (in a
        # dry run too: the real run would fail), or one left missing.
        failed = failed or any(
            r.action == NO_TEXT or (r.status == MISSING and not dry_run) for r in rows
        )
        if any(r.status != MISSING for r in blocked):
            _say(sys.stderr, "note: some templates are not usable; see 'templates status'")
    else:
        failed = failed or bool(blocked)
        for row in blocked:
            _say(
                sys.stderr,
                f"order-connector: templates: {row.account}: {row.name}/{row.locale} is "
                f"{row.status}: sends with it fail",
            )
    return EXIT_PROBLEM if failed else EXIT_OK


__all__ = [
    "AccountReport",
    "TemplateRow",
    "WantedTemplate",
    "account_report",
    "collect_reports",
    "list_account_templates",
    "render_table",
    "template_accounts",
    "templates_main",
    "templates_parser",
    "wanted_templates",
]
