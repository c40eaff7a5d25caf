"""The settings tables of the READMEs, generated from the settings classes.

``python -m tools.settings_tables`` rewrites every table between ``<!-- settings: module.Class -->`` and
``<!-- /settings -->`` in the READMEs listed in :data:`DOCUMENTS`; ``--check`` changes nothing and exits 1
when a table differs from what the class says (``tests/test_settings_tables.py`` runs it, like
``proto/generate.sh --check``). A field's row is its environment variable, its ``description`` and its
default; a nested model (the edge's ``detection``, ``motion``, ``tracking``) is expanded into one row per
field (``EDGE_DETECTION__MIN_FACE_SIZE``). Secrets show no default.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from pathlib import Path

from pydantic import BaseModel, SecretStr

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ("edge_agent/README.md", "analysis_server/README.md", "README.md")
BLOCK = re.compile(r"(<!-- settings: (?P<target>[\w.]+) -->\n)(?P<body>.*?)(<!-- /settings -->)", re.S)


def _default(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    else:
        value = field.default
    if isinstance(value, SecretStr) or value is None:
        return "unset"
    if isinstance(value, BaseModel):
        return "see below"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (list, dict, tuple)):
        return f"`{json.dumps(value if not isinstance(value, tuple) else list(value))}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def rows(cls, prefix: str) -> list[str]:
    out = []
    for name, field in cls.model_fields.items():
        env = f"{prefix}{name.upper()}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.append(f"| `{env}` | {field.description or ''} (JSON, or one variable per field below) | see below |")
            out += rows(annotation, f"{env}__")
            continue
        out.append(f"| `{env}` | {(field.description or '').replace('|', '/')} | {_default(field)} |")
    return out


def table(target: str) -> str:
    module, _, name = target.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    prefix = cls.model_config.get("env_prefix", "")
    return "\n".join(["| variable | meaning | default |", "| --- | --- | --- |", *rows(cls, prefix)]) + "\n"


def render(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + table(m.group("target")) + m.group(4), text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.settings_tables", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 when a table drifted")
    args = p.parse_args(argv)
    drifted = []
    for doc in DOCUMENTS:
        path = ROOT / doc
        text = path.read_text()
        new = render(text)
        if new != text:
            drifted.append(doc)
            if not args.check:
                path.write_text(new)
    if args.check and drifted:
        print(f"settings tables drifted in {', '.join(drifted)}: run python -m tools.settings_tables")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
