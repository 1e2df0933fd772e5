"""JSON Schemas of the topic contracts, generated from the pydantic models into the package's
``resources/schemas`` (shipped in the wheel; read them with `packaged_schema`).

Run ``python -m connector.contract.schemas [directory]`` to regenerate; a unit test fails when a
committed file no longer matches its model. Writes files only; nothing else.
"""

from __future__ import annotations

import json
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel

from connector.contract.events import OrderStatusChanged
from connector.contract.records import ErrorRecord, ResultRecord

# Where regeneration writes: the source tree next to this module (package data in the wheel).
DEFAULT_DIRECTORY: Final = Path(__file__).resolve().parent / "resources" / "schemas"

# file name -> (model, mode): the input event is described as accepted (validation), the
# records as written (serialization). Files of older versions (error-record.v1.json) stay
# committed, unchanged, for the records of that version still on the topics.
Mode = Literal["validation", "serialization"]
Schematic = type[BaseModel] | type[OrderStatusChanged]  # the event is a pydantic dataclass
SCHEMAS: Final[dict[str, tuple[Schematic, Mode]]] = {
    "order-status-changed.v1.json": (OrderStatusChanged, "validation"),
    "result-record.v1.json": (ResultRecord, "serialization"),
    "error-record.v2.json": (ErrorRecord, "serialization"),
}


def render_schema(model: Schematic, mode: Mode, file_name: str) -> str:
    """The schema text exactly as committed: sorted keys, two-space indent, trailing newline."""
    schema: dict[str, Any] = model.model_json_schema(mode=mode)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://order-status-connector/topics/schemas/{file_name}"
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def packaged_schema(file_name: str) -> str:
    """The committed text of one schema as shipped in the package (importlib.resources)."""
    if file_name not in SCHEMAS:
        raise KeyError(f"no topic schema named {file_name!r}; known: {', '.join(SCHEMAS)}")
    resource = files("connector.contract") / "resources" / "schemas" / file_name
    return resource.read_text(encoding="utf-8")


def export_schemas(directory: Path = DEFAULT_DIRECTORY) -> list[Path]:
    """Write every topic schema into ``directory``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for file_name, (model, mode) in SCHEMAS.items():
        path = directory / file_name
        path.write_text(render_schema(model, mode, file_name), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0]) if args else DEFAULT_DIRECTORY
    for path in export_schemas(directory):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
