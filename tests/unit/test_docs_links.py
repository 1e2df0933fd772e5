"""The docs name only what exists: file paths, relative links and ``python -m`` modules.

Scans README.md, CHANGELOG.md and docs/*.md. A path such as ``connector/kafka/consumer.py`` is
looked up from the repository root; a path that starts inside the package
(``delivery/engine.py``, as docs/architecture.md writes them) from ``connector/``. Paths with
wildcards or braces are not checked.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md")])

_TOP = "connector|docs|tests|benchmarks|topics|examples|kafka"
_INSIDE = "contract|core|delivery|http|providers|webhooks|server|ops|dev"
PATH = re.compile(
    rf"(?<![\w./*{{-])((?:{_TOP}|{_INSIDE})/[\w./-]*\w\.(?:py|md|json|yaml|xml))(?![\w*{{}}])"
)
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
CODE_SPAN = re.compile(r"`[^`\n]*`")  # a regex in `code` is not a link
MODULE = re.compile(r"python -m ((?:connector|benchmarks)(?:\.\w+)*)")


def _exists(path: str) -> bool:
    return (ROOT / path).exists() or (ROOT / "connector" / path).exists()


def _named_paths(doc: Path) -> set[str]:
    return set(PATH.findall(doc.read_text(encoding="utf-8")))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_named_path_exists(doc: Path) -> None:
    missing = sorted(p for p in _named_paths(doc) if not _exists(p))
    assert missing == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_resolves(doc: Path) -> None:
    links = LINK.findall(CODE_SPAN.sub("", doc.read_text(encoding="utf-8")))
    local = [link for link in links if "://" not in link and not link.startswith("mailto:")]
    missing = sorted(link for link in local if not (doc.parent / link).exists())
    assert missing == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_python_dash_m_module_exists(doc: Path) -> None:
    modules = set(MODULE.findall(doc.read_text(encoding="utf-8")))
    missing = sorted(m for m in modules if importlib.util.find_spec(m) is None)
    assert missing == []


def test_the_path_pattern_finds_paths() -> None:
    text = (
        "see `connector/kafka/consumer.py`, (docs/replay.md), delivery/engine.py and "
        "kafka/pom.xml; not connector/providers/*.py nor webhooks/{meta,zapi}.py"
    )
    assert set(PATH.findall(text)) == {
        "connector/kafka/consumer.py",
        "docs/replay.md",
        "delivery/engine.py",
        "kafka/pom.xml",
    }
    assert not _exists("connector/no_such_module.py")
