"""Reading model replies: tolerant JSON (code fences, prose around it), JSON parsers that check the
shape, and the reply as plain text. A reply that holds no usable value raises ParseError, which the
client keeps as a failure with the raw reply."""

from __future__ import annotations

import json
import re
from typing import Any, Callable


class ParseError(ValueError):
    """The reply holds no usable value (kept as a failure of kind `unparsable`, with the raw reply)."""

    kind = "unparsable"


class SchemaError(ParseError):
    """The reply parsed but has the wrong shape (kind `off_schema`)."""

    kind = "off_schema"


_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)```", re.S)


def parse_json(text: str | None) -> Any:
    """The JSON value in a model reply, tolerantly: the whole text, else the inside of a ``` fence,
    else the first JSON object or array in it (prose before or after is ignored)."""
    if not text or not text.strip():
        raise ParseError("empty reply")
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    for chunk in [m.group(1).strip() for m in _FENCE.finditer(text)] + [text]:
        tries = 0
        for i, ch in enumerate(chunk):
            if ch in "{[":
                try:
                    return decoder.raw_decode(chunk, i)[0]
                except ValueError:
                    tries += 1
                    if tries >= 32:  # a long run of braces that never closes: stop, it is not JSON
                        break
    excerpt = text if len(text) <= 80 else text[:77] + "..."
    raise ParseError(f"no JSON value in the reply: {excerpt!r}")


def json_parser(*required: str, model: type | None = None) -> Callable[[str], Any]:
    """A `parse` for JSON replies: tolerant JSON, then either a pydantic `model` to validate into, or
    an object that must hold the `required` fields. Wrong shape -> SchemaError (kind off_schema)."""

    def parse(raw: str) -> Any:
        value = parse_json(raw)
        if model is not None:
            try:
                return model.model_validate(value)
            except Exception as exc:  # pydantic.ValidationError, without importing pydantic here
                first = str(exc).splitlines()
                raise SchemaError(f"reply does not match {model.__name__}: {' '.join(first[:3])}") from exc
        if required:
            if not isinstance(value, dict):
                raise SchemaError(f"expected a JSON object with {list(required)}, got {type(value).__name__}")
            missing = [name for name in required if name not in value]
            if missing:
                raise SchemaError(f"missing field(s) {missing}; the reply has {sorted(value)[:10]}")
        return value

    return parse


def reply_text(raw: str) -> str:
    """The reply as text; a JSON reply (some models, or JSON mode) gives its first string."""
    text = (raw or "").strip()
    if text[:1] in "{[":
        try:
            value = parse_json(text)
        except ParseError:
            if text.startswith('{"'):  # a JSON object cut off or malformed: no value to take from it
                raise ParseError("the reply starts a JSON object that does not parse") from None
            return text
        stack = [value]
        while stack:
            v = stack.pop(0)
            if isinstance(v, str) and v.strip():
                return v.strip()
            if isinstance(v, dict):
                stack = list(v.values()) + stack
            elif isinstance(v, list):
                stack = list(v) + stack
    return text
