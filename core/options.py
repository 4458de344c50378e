"""Options from config dataclasses: their help text, `-o KEY=VALUE` parsing and coercion, and the
rows the app's forms and settings tables are built from.

Every config in Assay (an auditor's, a generator's, `TrainConfig`, `LLMConfig`) is a dataclass whose
fields carry their help in `metadata["help"]`, as trl's SFTConfig does; this module is the one place
that reads them, so the CLI, the app and the docs cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from assay.core.errors import AssayError


@dataclass(frozen=True)
class Option:
    name: str
    type: str  # the annotation as written in the dataclass, e.g. "float", "list[str]", "str | None"
    default: Any
    help: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def options(config_class: type) -> list[Option]:
    """The fields of `config_class`, in order, with their defaults and help."""
    out = []
    for f in dataclasses.fields(config_class):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        type_name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        out.append(Option(f.name, type_name, default, f.metadata.get("help", "")))
    return out


def help_texts(config_class: type) -> dict[str, str]:
    """Field name -> help text."""
    return {o.name: o.help for o in options(config_class)}


def _json_or_text(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def coerce(raw: str, type_name: str, *, option: str) -> Any:
    """A command-line string as a field's declared type: numbers and booleans as such, lists
    comma-separated (or a JSON array), dicts `K=V,...` (or a JSON object). A type this cannot read
    takes the value as JSON when it parses, else as text."""
    optional = "None" in type_name
    base = type_name.replace("| None", "").replace("None |", "").strip()
    if optional and raw.strip().lower() in ("none", "null"):
        return None
    try:
        if base == "int":
            return int(raw)
        if base == "float":
            return float(raw)
        if base == "bool":
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1", "yes")
        if base == "str":
            # a quoted JSON string (-o name='"x"') is the text inside the quotes, as before
            return json.loads(raw) if raw.startswith('"') and raw.endswith('"') and len(raw) > 1 else raw
        if base.startswith(("list", "tuple")):
            if raw.lstrip().startswith("["):
                return json.loads(raw)
            return [v.strip() for v in raw.split(",") if v.strip()]
        if base.startswith("dict"):
            if raw.lstrip().startswith("{"):
                return json.loads(raw)
            pairs = [p for p in raw.split(",") if p.strip()]
            if any("=" not in p for p in pairs):
                raise ValueError(raw)
            return dict(p.split("=", 1) for p in pairs)
    except ValueError:  # json.JSONDecodeError is a ValueError too
        raise AssayError(f"{option}: expected {base}, got {raw!r}") from None
    return _json_or_text(raw)


def split_assignment(pair: str, *, form: str = "FIELD=VALUE") -> tuple[str, str]:
    """'lr=0.1' -> ('lr', '0.1'); a pair without '=' or a name is refused, naming the form."""
    key, sep, raw = pair.partition("=")
    if not sep or not key.strip():
        raise AssayError(f"invalid --option {pair!r}: expected {form}")
    return key.strip(), raw


def coerce_fields(config_class: type, values: dict[str, str], *, prefix: str = "") -> dict[str, Any]:
    """Raw strings for fields of `config_class` -> typed values. A name the class does not have is
    passed on as JSON-or-text, so the config itself refuses it with its own message."""
    types = {o.name: o.type for o in options(config_class)}
    return {name: coerce(raw, types[name], option=f"{prefix}{name}") if name in types else _json_or_text(raw)
            for name, raw in values.items()}


def parse_assignments(pairs: list[str], config_class: type) -> dict[str, Any]:
    """`-o FIELD=VALUE ...` for one config class -> {field: typed value}."""
    return coerce_fields(config_class, dict(split_assignment(p) for p in pairs))


def parse_scoped_assignments(pairs: list[str]) -> dict[str, dict[str, str]]:
    """`-o SCOPE.FIELD=VALUE ...` (an auditor's settings) -> {scope: {field: raw}}; coerce each scope
    with `coerce_fields` once its config class is known."""
    out: dict[str, dict[str, str]] = {}
    for pair in pairs:
        key, raw = split_assignment(pair, form="AUDITOR.FIELD=VALUE")
        scope, dot, name = key.partition(".")
        if not dot or not scope or not name:
            raise AssayError(f"invalid --option {pair!r}: expected AUDITOR.FIELD=VALUE")
        out.setdefault(scope, {})[name] = raw
    return out


def settings_rows(config_class: type, prefix: str = "") -> list[dict[str, str]]:
    """One row per field (setting, default, help) for a settings table in the app or the docs."""
    return [{"setting": f"{prefix}{o.name}", "default": str(o.default), "help": o.help} for o in options(config_class)]
