"""The settings tables of the READMEs, generated from the settings classes.

``python -m tools.settings_tables`` rewrites every table between ``<!-- settings: module.Class -->`` and
``<!-- /settings -->`` in the READMEs listed in :data:`DOCUMENTS`; ``--check`` changes nothing and exits 1
when a table differs from what the class says (``tests/test_settings_tables.py`` runs it, like
``proto/generate.sh --check``). A field's row is its environment variable, its ``description`` and its
default (and its command-line flag, for a class whose program has one: :data:`FLAGS`); a nested model (the edge's ``detection``, ``motion``, ``tracking``) is expanded into one row per
field (``EDGE_DETECTION__MIN_FACE_SIZE``). Secrets show no default.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from pathlib import Path

from pydantic import AliasChoices, BaseModel, SecretStr

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ("edge_agent/README.md", "analysis_server/README.md", "README.md")
# The argument parser of each settings class's program: a flag whose ``dest`` is a field is that field's flag.
FLAGS = {"analysis_server.settings.ServerSettings": "analysis_server.__main__:parser"}
BLOCK = re.compile(r"(<!-- settings: (?P<target>[\w.]+) -->\n)(?P<body>.*?)(<!-- /settings -->)", re.S)


def _default(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    else:
        value = field.default
    if isinstance(value, SecretStr) or value is None:
        return "unset"
    if value == "":
        return "empty"
    if isinstance(value, BaseModel):
        return "see below"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (list, dict, tuple)):
        return f"`{json.dumps(value if not isinstance(value, tuple) else list(value))}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def _names(name: str, field, prefix: str) -> str:
    """The variable, and the other environment names it is read from (``REDIS_URL``)."""
    names = [f"{prefix}{name.upper()}"]
    if isinstance(field.validation_alias, AliasChoices):
        names += [a for a in field.validation_alias.choices if isinstance(a, str) and a.isupper() and a not in names]
    return " or ".join(f"`{n}`" for n in names)


def rows(cls, prefix: str, flags: dict[str, str] | None = None) -> list[str]:
    out = []
    for name, field in cls.model_fields.items():
        env = _names(name, field, prefix)
        flag = [] if flags is None else [f"`{flags[name]}`" if name in flags else ""]
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.append("| " + " | ".join([env, *flag, f"{field.description or ''} (JSON, or one variable per "
                                          "field below)", "see below"]) + " |")
            out += rows(annotation, f"{prefix}{name.upper()}__", flags)
            continue
        out.append("| " + " | ".join([env, *flag, (field.description or "").replace("|", "/"), _default(field)]) + " |")
    return out


def _flags(target: str) -> dict[str, str] | None:
    """Field name -> its flag in the program's argument parser (None: the class has no program)."""
    if target not in FLAGS:
        return None
    module, _, function = FLAGS[target].partition(":")
    parser = getattr(importlib.import_module(module), function)()
    return {a.dest: a.option_strings[-1] for a in parser._actions if a.option_strings and a.dest != "help"}


def table(target: str) -> str:
    module, _, name = target.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    prefix = cls.model_config.get("env_prefix", "")
    flags = _flags(target)
    if flags is not None:
        unknown = set(flags) - set(cls.model_fields)
        if unknown:
            raise SystemExit(f"{FLAGS[target]}: flags whose dest is no field of {name}: {sorted(unknown)}")
        head = ["| variable | flag | meaning | default |", "| --- | --- | --- | --- |"]
    else:
        head = ["| variable | meaning | default |", "| --- | --- | --- |"]
    return "\n".join([*head, *rows(cls, prefix, flags)]) + "\n"


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
