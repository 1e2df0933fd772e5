"""Secrets in the config file: ``env:NAME`` and ``file:/path`` references resolved at load time,
literal secrets refused, and every configured secret value collected for the log redactor.

A field is secret-looking when its name holds one of ``_SECRET_WORDS`` (and is not an ``*_id``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from connector.core.config_problems import Findings, RawPath

_SECRET_REF_PREFIXES = ("env:", "file:")


def collect_secrets(value: object, out: list[str]) -> None:
    """Append every ``SecretStr`` value found in ``value`` (models, lists, dicts) to ``out``."""
    if isinstance(value, SecretStr):
        out.append(value.get_secret_value())
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            collect_secrets(getattr(value, name), out)
    elif isinstance(value, list | tuple):
        for item in value:
            collect_secrets(item, out)
    elif isinstance(value, dict):
        for item in value.values():
            collect_secrets(item, out)


_UNRESOLVED = "unresolved-secret"  # stands in for a secret that failed, so validation goes on


def _resolve_secret(ref: str, path: RawPath, environ: dict[str, str], found: Findings) -> str:
    kind, _, target = ref.partition(":")
    if kind == "env":
        if target not in environ:
            found.at(path, f"environment variable {target} is not set")
            return _UNRESOLVED
        return environ[target]
    secret_file = Path(target)
    try:
        return secret_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        found.at(path, f"cannot read secret file {secret_file}: {exc.strerror}")
        return _UNRESOLVED


def resolve_secret_refs(raw: Any, path: RawPath, environ: dict[str, str], found: Findings) -> Any:
    """Replace ``env:``/``file:`` references in secret-looking fields; report literal secrets."""
    if isinstance(raw, dict):
        out: dict[str, Any] = {}
        for key, value in raw.items():
            here = (*path, key)
            if _looks_secret(str(key)) and value is not None:
                if not (isinstance(value, str) and value.startswith(_SECRET_REF_PREFIXES)):
                    found.at(
                        here,
                        "secrets may not be written in the config file; "
                        "use 'env:VARIABLE' or 'file:/path/to/secret'",
                    )
                    out[key] = _UNRESOLVED
                    continue
                out[key] = _resolve_secret(value, here, environ, found)
            else:
                out[key] = resolve_secret_refs(value, here, environ, found)
        return out
    if isinstance(raw, list):
        return [resolve_secret_refs(v, (*path, i), environ, found) for i, v in enumerate(raw)]
    return raw


_SECRET_WORDS = ("token", "secret", "password", "api_key", "encryption_key")


def _looks_secret(key: str) -> bool:
    return any(word in key for word in _SECRET_WORDS) and not key.endswith("_id")
