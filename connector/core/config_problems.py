"""Configuration problems, each named by file, line and path: ``file:line: path: message``.

Owns how a raw config path (list indexes) is shown (accounts by name), where a YAML key sits
(yaml's node marks) and the "did you mean" for unknown keys. Pure: no file reading, no I/O.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel

from connector.errors import ConfigError

RawPath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem of a config file: ``path`` names accounts by name (``accounts.meta-br.token``),
    ``line`` is the file's line (None: not in the file, e.g. an environment variable)."""

    path: str
    message: str
    line: int | None = None
    from_env: bool = False  # set by an ORDER_CONNECTOR_* variable, not written in the file

    def render(self, file: Path) -> str:
        if self.from_env:
            return f"(environment): {self.path}: {self.message}"
        where = f"{file}:{self.line}" if self.line is not None else str(file)
        return f"{where}: {self.path}: {self.message}"


class ConfigProblemsError(ConfigError):
    """Every problem found in one pass; ``lines`` holds one ``file:line: path: message`` each."""

    def __init__(self, file: Path, problems: list[ConfigProblem]) -> None:
        self.lines = [p.render(file) for p in problems]
        super().__init__(f"{len(self.lines)} problem(s):\n" + "\n".join(self.lines))


class Findings:
    """Problems as they are found, keyed by the raw path (list indexes, not yet names)."""

    def __init__(self) -> None:
        self.items: list[tuple[RawPath | None, str, str]] = []  # (raw path, env var, message)

    def at(self, path: RawPath, message: str) -> None:
        self.items.append((path, "", message))

    def env(self, var: str, message: str) -> None:
        self.items.append((None, var, message))


def repeated(names: Iterable[str]) -> list[str]:
    """The names that occur more than once, sorted: what a "must be unique" problem names."""
    return sorted(name for name, count in Counter(names).items() if count > 1)


def yaml_lines(text: str) -> dict[tuple[str, ...], int]:
    """The line (1-based) of every key and list item of a YAML text, by path (all as text)."""
    lines: dict[tuple[str, ...], int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                here = (*path, str(key.value))
                lines.setdefault(here, key.start_mark.line + 1)
                walk(value, here)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, str(i)))

    if root is not None:
        walk(root, ())
    return lines


def line_of(lines: dict[tuple[str, ...], int], path: RawPath) -> int | None:
    """The line of ``path``, else of its nearest ancestor written in the file."""
    keys = tuple(str(p) for p in path)
    for end in range(len(keys), 0, -1):
        if keys[:end] in lines:
            return lines[keys[:end]]
    return None


def display_path(raw: Any, path: RawPath) -> str:
    """``path`` with list indexes replaced by the item's ``name`` (or ``account``)."""
    parts: list[str] = []
    node = raw
    for part in path:
        if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
            item = node[part]
            label = item.get("name") or item.get("account") if isinstance(item, dict) else None
            parts.append(str(label) if isinstance(label, str) and label else str(part))
            node = item
            continue
        parts.append(str(part))
        node = node.get(part) if isinstance(node, dict) else None
    return ".".join(parts) or "(top level)"


def _child(node: Any, part: str | int) -> Any:
    """The raw value under ``part`` of a dict or list node (None when there is none)."""
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


def without_tags(raw: Any, loc: tuple[str | int, ...]) -> RawPath:
    """A pydantic error location as a raw path: discriminator tags (``meta``) dropped."""
    out: list[str | int] = []
    node = raw
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("provider") == part:
            continue
        out.append(part)
        node = _child(node, part)
    return tuple(out)


def _concrete(annotation: Any, node: Any) -> Any:
    """The type ``annotation`` means for ``node``: Annotated/Optional unwrapped, a provider
    union resolved by the node's ``provider``; None when that cannot be decided."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _concrete(members[0], node)
        for member in members:
            field = getattr(member, "model_fields", {}).get("provider")
            if (
                field is not None
                and isinstance(node, dict)
                and field.default == node.get("provider")
            ):
                return member
        return None
    return annotation


def _fields_at(root: type[BaseModel], raw: Any, path: RawPath) -> list[str]:
    """The setting names the model at ``path`` accepts (empty when it cannot be told)."""
    annotation: Any = root
    node = raw
    for part in path:
        annotation = _concrete(annotation, node)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return []
            annotation = field.annotation
        elif get_origin(annotation) in (list, tuple):
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        else:
            return []
        node = _child(node, part)
    annotation = _concrete(annotation, node)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def unknown_key_message(root: type[BaseModel], raw: Any, path: RawPath) -> str:
    """ "unknown setting", with the closest setting the model at that place accepts."""
    known = _fields_at(root, raw, path[:-1])
    close = difflib.get_close_matches(str(path[-1]), known, n=1, cutoff=0.6)
    if close:
        return f"unknown setting; did you mean {close[0]!r}?"
    return "unknown setting"
