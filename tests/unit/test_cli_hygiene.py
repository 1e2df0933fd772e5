"""The command line as a user meets it: every option explained, enumerated options with choices,
help for users only (no notes for developers), usage errors on one line, progress on stderr."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from connector.cli import command_parsers, main, parser_options
from connector.errors import ErrorClass
from connector.ops.command import ProgressLine
from tests.support.paths import REPO_ROOT

PARSERS = command_parsers()


def test_every_command_is_reached() -> None:
    assert set(PARSERS) >= {
        "order-connector",
        "order-connector run",
        "order-connector check-config",
        "order-connector demo",
        "order-connector templates ensure",
        "order-connector templates status",
        "order-connector topics apply",
        "order-connector replay",
        "order-connector redrive",
        "order-connector sandbox",
    }


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_option_has_help(name: str) -> None:
    missing = [
        a.option_strings[0]
        for a in parser_options(PARSERS[name])
        if not a.help or not a.help.strip()
    ]
    assert missing == []


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_help_is_for_users(name: str) -> None:
    text = PARSERS[name].format_help()
    for developer_note in ("Owns ", "connector.", "``", "`order-connector"):
        assert developer_note not in text, developer_note


def choices_of(name: str, option: str) -> list[str]:
    action = next(a for a in parser_options(PARSERS[name]) if option in a.option_strings)
    assert action.choices is not None, f"{name} {option} has no choices"
    return list(action.choices)


def test_enumerated_options_have_choices() -> None:
    levels = ["debug", "info", "warning", "error"]
    assert choices_of("order-connector run", "--log-level") == levels
    assert choices_of("order-connector replay", "--log-level") == levels
    assert choices_of("order-connector redrive", "--log-level") == levels
    assert choices_of("order-connector redrive", "--class") == [c.value for c in ErrorClass]
    assert choices_of("order-connector sandbox", "--loop") == ["auto", "asyncio", "uvloop"]


@pytest.mark.parametrize(
    "argv",
    [
        ["templates", "status"],
        ["templates", "ensure", "--config", "c.yaml", "--dry-rum"],
        ["topics", "apply"],
        ["replay", "--config", "c.yaml", "--from-time", "yesterday"],
        ["redrive", "--config", "c.yaml", "--class", "nope"],
        ["check-config"],
        ["nonsense"],
    ],
)
def test_usage_errors_are_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("order-connector")
    assert "-h'" in err  # says where the help is


@pytest.mark.parametrize("command", ["replay", "redrive"])
def test_invalid_configuration_exits_2_with_one_line(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(SystemExit) as exited:
        main([command, "--config", str(missing)])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"order-connector {command}: configuration invalid: "), err
    assert err.endswith("\n")
    assert "Traceback" not in err


def test_run_with_an_unknown_log_level_is_one_clear_line(tmp_path: object) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "connector.cli",
            "run",
            "--config",
            "x.yaml",
            "--log-level",
            "verbose",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1
    assert "--log-level: invalid choice: 'verbose'" in done.stderr
    assert "'debug', 'info', 'warning', 'error'" in done.stderr


def test_progress_line_outside_a_terminal_prints_lines() -> None:
    out = io.StringIO()
    progress = ProgressLine(out, 4, "re-driven", interval_s=0.0)
    progress.update(0)
    progress.update(2)
    progress.finish(4)
    lines = out.getvalue().splitlines()
    assert [line.split("] ")[1].split(",")[0] for line in lines] == [
        "0/4 re-driven",
        "2/4 re-driven",
        "4/4 re-driven",
    ]
    assert lines[-1].startswith("[" + "#" * 30 + "]")
    assert "\r" not in out.getvalue()
