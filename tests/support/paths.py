"""Where the repository and its topic contracts are, for tests that read or run them."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TOPICS_SPEC_PATH = REPO_ROOT / "connector" / "contract" / "resources" / "topics.yaml"
