"""Reading replies: the tolerant JSON parser and the shape-checking json_parser."""

from __future__ import annotations

import pydantic
import pytest

from assay.core.llm import ParseError, SchemaError, json_parser, parse_json


@pytest.mark.parametrize("text, expected", [
    ('{"a": 1}', {"a": 1}),
    ('```json\n{"a": [1, 2]}\n```', {"a": [1, 2]}),
    ('Sure! Here it is:\n```\n{"a": "x"}\n```\nHope this helps.', {"a": "x"}),
    ('The answer is {"a": {"b": "}"}} and that is all {not json}', {"a": {"b": "}"}}),
    ('noise { broken [ then [1, 2, 3] trailing', [1, 2, 3]),
    ('```json\n{"a": 1}', {"a": 1}),  # an unclosed fence (a reply cut by max_tokens)
])
def test_parse_json_is_tolerant(text, expected):
    assert parse_json(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "no json here", '{"a": 1', "```json\n{\"a\": \n```"])
def test_parse_json_rejects_what_holds_no_json(text):
    with pytest.raises(ParseError) as err:
        parse_json(text)
    assert err.value.kind == "unparsable"


def test_json_parser_checks_the_shape():
    class Pair(pydantic.BaseModel):
        question: str
        answer: str

    assert json_parser("q")('{"q": 1, "x": 2}') == {"q": 1, "x": 2}
    with pytest.raises(SchemaError, match=r"missing field\(s\) \['a'\]"):
        json_parser("a", "q")('{"q": 1}')
    with pytest.raises(SchemaError, match="expected a JSON object"):
        json_parser("a")("[1]")
    assert json_parser(model=Pair)('ok: {"question": "q", "answer": "a"}') == Pair(question="q", answer="a")
    with pytest.raises(SchemaError, match="does not match Pair"):
        json_parser(model=Pair)('{"question": "q"}')
