"""``order-connector templates`` and ``check-config --online`` as an operator runs them: the CLI
in a subprocess, secrets from the environment, against the sandbox over loopback HTTP."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import anyio

from connector.dev.sandbox import SandboxServer
from tests.support.paths import REPO_ROOT
from tests.support.sandbox_client import (
    META_TOKEN,
    YCLOUD_KEY,
    ZAPI_CLIENT_TOKEN,
    ZAPI_INSTANCE_TOKEN,
    ZONOS_SECRET,
)

ENV = {
    "OSC_META_TOKEN": META_TOKEN,
    "OSC_YCLOUD_KEY": YCLOUD_KEY,
    "OSC_ZAPI_INSTANCE": ZAPI_INSTANCE_TOKEN,
    "OSC_ZAPI_CLIENT": ZAPI_CLIENT_TOKEN,
    "OSC_ZONOS_SECRET": ZONOS_SECRET,
}


def write_config(path: Path, sandbox: SandboxServer) -> Path:
    path.write_text(
        f"""
accounts:
  - provider: meta
    name: meta-br
    base_url: {sandbox.provider_url("meta")}
    phone_number_id: "106540352242922"
    access_token: env:OSC_META_TOKEN
    waba_id: "102290129340398"
    template_name: order_status_update
    language: pt_BR
  - provider: ycloud
    name: ycloud-mx
    base_url: {sandbox.provider_url("ycloud")}
    api_key: env:OSC_YCLOUD_KEY
    sender: "+5215500000001"
    waba_id: WABA-MX
    template_name: order_status_update
    language: es_MX
  - provider: zapi
    name: zapi-br
    base_url: {sandbox.provider_url("zapi")}
    instance_id: 3C4E5F
    instance_token: env:OSC_ZAPI_INSTANCE
    client_token: env:OSC_ZAPI_CLIENT
  - provider: zonos
    name: zonos-us
    base_url: {sandbox.provider_url("zonos")}
    store: "999"
    secret: env:OSC_ZONOS_SECRET
templates:
  - name: order_status_update
    variants:
      - {{locale: pt_BR, body: "Seu pedido mudou de status.", footer: "Loja Exemplo"}}
      - {{locale: es_MX, body: "Su pedido cambió de estado."}}
""",
        encoding="utf-8",
    )
    return path


def with_legacy_template(config: Path, target: Path) -> Path:
    """``config`` with ycloud-mx sending a template that has no text under ``templates:``."""
    text = config.read_text(encoding="utf-8").replace(
        "template_name: order_status_update\n    language: es_MX",
        "template_name: legacy_status\n    language: es_MX",
    )
    assert "legacy_status" in text
    target.write_text(text, encoding="utf-8")
    return target


@dataclass
class Run:
    code: int
    out: str
    err: str

    def rows(self) -> list[list[str]]:
        return [line.split() for line in self.out.splitlines()[1:]]


async def cli(*args: str, env: dict[str, str] | None = None) -> Run:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "connector.cli",
        *args,
        cwd=REPO_ROOT,
        env={**os.environ, **ENV, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    with anyio.fail_after(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


async def test_ensure_creates_once_and_status_watches(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    config = str(write_config(tmp_path / "connector.yaml", sandbox))

    before = await cli("templates", "status", "--config", config)
    assert before.code == 1, before.err
    assert {tuple(r[:5]) for r in before.rows()} == {
        ("meta-br", "meta", "order_status_update", "pt_BR", "MISSING"),
        ("meta-br", "meta", "order_status_update", "es_MX", "MISSING"),
        ("ycloud-mx", "ycloud", "order_status_update", "pt_BR", "MISSING"),
        ("ycloud-mx", "ycloud", "order_status_update", "es_MX", "MISSING"),
    }
    assert "is MISSING" in before.err

    dry = await cli("templates", "ensure", "--config", config, "--dry-run")
    assert dry.code == 0, dry.err
    assert {" ".join(r[4:]) for r in dry.rows()} == {"MISSING would create"}
    assert sandbox.templates() == []

    made = await cli("templates", "ensure", "--config", config, "--account", "meta-br")
    assert made.code == 0, made.err
    assert [r[-2:] for r in made.rows()] == [["APPROVED", "created"]] * 2
    assert {(t["provider"], t["language"]) for t in sandbox.templates()} == {
        ("meta", "pt_BR"),
        ("meta", "es_MX"),
    }

    again = await cli("templates", "ensure", "--config", config)
    assert again.code == 0, again.err
    actions = {(r[0], r[3]): r[-1] for r in again.rows()}
    assert actions == {
        ("meta-br", "pt_BR"): "exists",
        ("meta-br", "es_MX"): "exists",
        ("ycloud-mx", "pt_BR"): "created",
        ("ycloud-mx", "es_MX"): "created",
    }
    assert len(sandbox.templates()) == 4  # never duplicated
    third = await cli("templates", "ensure", "--config", config)
    assert {r[-1] for r in third.rows()} == {"exists"}
    assert len(sandbox.templates()) == 4

    ok = await cli("templates", "status", "--config", config)
    assert ok.code == 0, ok.err
    assert {r[4] for r in ok.rows()} == {"APPROVED"}

    assert sandbox.set_template_status("order_status_update", "PAUSED", language="es_MX") == 2
    paused = await cli("templates", "status", "--config", config, "--account", "ycloud-mx")
    assert paused.code == 1
    assert {(r[3], r[4]) for r in paused.rows()} == {("pt_BR", "APPROVED"), ("es_MX", "PAUSED")}
    assert "ycloud-mx: order_status_update/es_MX is PAUSED" in paused.err


async def test_cli_errors_are_one_line_and_secrets_stay_out(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    config = str(write_config(tmp_path / "connector.yaml", sandbox))
    unknown = await cli("templates", "status", "--config", config, "--account", "zapi-br")
    assert unknown.code == 2
    assert unknown.err.count("\n") == 1
    assert "known: meta-br, ycloud-mx" in unknown.err

    wrong = await cli(
        "templates", "ensure", "--config", config, env={"OSC_META_TOKEN": "a-wrong-token-value"}
    )
    assert wrong.code == 1
    assert "account meta-br (meta): meta error 190" in wrong.err
    assert "a-wrong-token-value" not in wrong.out + wrong.err
    assert not [t for t in sandbox.templates() if t["provider"] == "meta"]

    # An account sending with a template the config has no text for: ensure cannot create it.
    legacy = with_legacy_template(Path(config), tmp_path / "legacy.yaml")
    for extra in (["--dry-run"], []):
        run = await cli(
            "templates", "ensure", "--config", str(legacy), "--account", "ycloud-mx", *extra
        )
        assert run.code == 1, run.out
        assert [
            "legacy_status",
            "es_MX",
            "MISSING",
            "no",
            "text",
            "in",
            "config",
            "(templates:)",
        ] in [r[2:] for r in run.rows()]
    assert not [t for t in sandbox.templates() if t["name"] == "legacy_status"]


async def test_check_config_online(sandbox: SandboxServer, tmp_path: Path) -> None:
    config = str(write_config(tmp_path / "connector.yaml", sandbox))
    missing = await cli("check-config", "--config", config, "--online")
    assert missing.code == 1
    lines = missing.out.splitlines()
    assert lines[0].startswith("configuration ok: 4 account(s)")
    assert "account meta-br (meta): credentials ok" in lines
    assert "account ycloud-mx (ycloud): credentials ok" in lines
    assert "account zapi-br (zapi): credentials ok" in lines
    assert any(
        line.startswith("account zonos-us (zonos): credentials not checked") for line in lines
    )
    assert "account meta-br (meta): template order_status_update/pt_BR: MISSING" in lines

    assert (await cli("templates", "ensure", "--config", config)).code == 0
    good = await cli("check-config", "--config", config, "--online")
    assert good.code == 0, good.out
    assert "account ycloud-mx (ycloud): template order_status_update/es_MX: APPROVED" in (
        good.out.splitlines()
    )

    bad = await cli(
        "check-config", "--config", config, "--online", env={"OSC_ZAPI_CLIENT": "wrong-client-1"}
    )
    assert bad.code == 1
    assert any(
        line.startswith("account zapi-br (zapi): credentials rejected")
        for line in bad.out.splitlines()
    )
    assert "wrong-client-1" not in bad.out

    offline = await cli("check-config", "--config", config, env={"OSC_META_TOKEN": "x" * 12})
    assert offline.code == 0  # without --online nothing is called
    assert offline.out.count("\n") == 1
