"""``check-config --online``: per account, one harmless call that proves the credentials work,
and for Meta/YCloud accounts the status of every template the configuration uses.

Reads only: never sends a message, never creates a template. The offline checks stay in
``connector.config``; this module only talks to the providers.
"""

from __future__ import annotations

import httpx

from connector.config import ConnectorConfig
from connector.core.redaction import SecretScrubber
from connector.ops.templates import account_report
from connector.providers import MetaAccount, YCloudAccount
from connector.providers.template_api import TemplateApiError, check_probe, probe_request


async def online_lines(config: ConnectorConfig, *, timeout_s: float) -> tuple[list[str], bool]:
    """One line per account (and per unusable template); ``ok`` False when any check failed."""
    lines: list[str] = []
    ok = True
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        for account in config.accounts:
            head = f"account {account.name} ({account.provider})"
            request = probe_request(account)
            if request is None:
                lines.append(f"{head}: credentials not checked: the API has no read-only call")
            else:
                try:
                    response = await client.send(request)
                    await response.aread()
                    check_probe(account.provider, response)
                except httpx.HTTPError as exc:
                    ok = False
                    lines.append(f"{head}: unreachable: {type(exc).__name__} {exc}")
                    continue
                except TemplateApiError as exc:
                    ok = False
                    what = "credentials rejected" if exc.credentials else "probe failed"
                    lines.append(f"{head}: {what}: {exc}")
                    continue
                lines.append(f"{head}: credentials ok")
            if isinstance(account, MetaAccount | YCloudAccount):
                report = await account_report(client, config, account, create=False, dry_run=False)
                if report.error is not None:
                    ok = False
                    lines.append(f"{head}: templates: {report.error}")
                for row in report.rows:
                    lines.append(f"{head}: template {row.name}/{row.locale}: {row.status}")
                    ok = ok and not row.blocked
    scrubber = SecretScrubber(config.secret_values(), min_length=4)
    return [scrubber.scrub_text(" ".join(line.split())) for line in lines], ok


__all__ = ["online_lines"]
