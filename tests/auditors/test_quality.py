import dataclasses
import json

import polars as pl
import pytest
from helpers import imported_version

from assay.auditors.base import AuditContext
from assay.auditors.quality import FLAGS, Quality, QualityConfig
from assay.auditors.runner import make_auditor, run_audit
from assay.core.audits import audit_columns, filter_version
from assay.core.options import help_texts
from assay.core.records import Message, Record, rows_to_table, with_text
from assay.pipelines.importer import import_source


def audit(store, rows, **options):
    """Run Quality on hand-written records; rows are Record objects or (prompt, response) pairs.
    Returns (per-row columns, summary)."""
    records = [r if isinstance(r, Record) else Record(instruction=r[0], output=r[1]) for r in rows]
    frame = with_text(pl.from_arrow(rows_to_table([r.to_row() for r in records])))
    result = Quality(QualityConfig(**options)).run(frame, AuditContext(store, "test"))
    assert result.columns.height == len(rows)
    assert all(c.startswith("quality_") for c in result.columns.columns)
    return result.columns, result.summary


def flag(store, flag_name, responses, prompt="Answer the question.", **options):
    cols, _ = audit(store, [(prompt, r) for r in responses], **options)
    return cols[f"quality_{flag_name}"].to_list()


PROSE = ("The water cycle describes how water moves around the planet. Water evaporates from oceans and "
         "lakes, rises as vapour and cools into clouds. It then falls back as rain or snow and flows into "
         "rivers, which carry it back to the sea.")


def test_config_fields_all_have_help():
    assert all(help_texts(QualityConfig).values())
    assert make_auditor("quality", {"short_min_words": 3}).config.short_min_words == 3


def test_bad_options_are_refused(store):
    from assay.core.errors import AssayError

    with pytest.raises(AssayError, match="invalid refusal pattern"):
        audit(store, [("q", "a")], refusal_patterns=["(unclosed"])
    with pytest.raises(AssayError, match="language_column"):
        audit(store, [("q", "a")], language_column="output")
    with pytest.raises(AssayError, match="only 'en'"):
        audit(store, [("q", "a")], expected_language="fr")


def test_empty_and_short_outputs(store):
    assert flag(store, "empty_output", ["", "  \n\t", "ok", PROSE]) == [True, True, False, False]
    # one-word labels are normal answers; by default only one-character outputs are short
    assert flag(store, "short_output", ["", "D", "No", "Positive", PROSE]) == [False, True, False, False, False]
    assert flag(store, "short_output", ["Yes.", "Paris", "It is blue.", "A cat"], short_min_words=3) \
        == [True, True, False, True]


def test_empty_text_is_a_flag_not_a_crash(store):
    cols, summary = audit(store, [("", ""), ("   ", "  "), ("Say hi.", "Hi!")])
    assert cols["quality_empty_output"].to_list() == [True, True, False]
    assert cols["quality_flags"].to_list() == ["empty_output", "empty_output", ""]
    assert summary["flagged_records"] == 2
    assert summary["style"]["responses"] == 1


def test_output_in_instruction(store):
    text = "Rainbows form when sunlight is refracted, reflected and dispersed in water droplets."
    cases = [
        ("Repeat nothing.", "Repeat nothing."),  # the prompt itself
        (f"Summarise the paragraph.\n\n{text} They show a spectrum of colours.", text),  # copied from the input
        (f"Summarise the paragraph.\n\n{text}", "  " + text.upper() + "  "),  # a case change is an edit
        ("Is this review positive or negative?\n\nGreat phone, love it.", "positive"),  # a label, not a copy
        ("Fix the indentation.\n\ndef f(x):\nreturn x", "def f(x):\n    return x"),  # the fix is the indentation
        ("Name a colour.", "Blue is a calm colour."),
    ]
    cols, _ = audit(store, cases)
    assert cols["quality_output_in_instruction"].to_list() == [True, True, False, False, False, False]


def test_refusals(store):
    refusals = [
        "As an AI language model, I do not have personal opinions about politics.",
        "I'm sorry, but I can't assist with that request.",
        "I’m sorry, but I can’t help with that.",  # curly apostrophes
        "I cannot assist with creating malware.",
        "Sorry, I cannot provide that information.",
        "I apologize, but I am unable to browse the internet.",
        "Here is a summary. However, as of my last update in 2021, the figures may have changed.",
    ]
    fine = [
        "I'm sorry to hear about your loss. Here are a few ways to cope: talk to friends, rest and eat well.",
        "Say sorry when you bump into someone; a sincere apology repairs most small mistakes.",
        'The clerk shook his head. "I\'m sorry, but I can\'t help you," he said, and closed the window.',
        'def greet():\n    print("As an AI language model, I cannot feel.")\n    return 0',  # test data in code
        "Artificial intelligence (AI) is the ability of machines to learn, as an AI textbook would put it.",
        PROSE,
    ]
    assert flag(store, "refusal", refusals) == [True] * len(refusals)
    assert flag(store, "refusal", fine) == [False] * len(fine)
    assert flag(store, "refusal", ["Computer says no."], refusal_patterns=[r"computer says no"]) == [True]


def test_truncated(store):
    cut = [
        "The French Revolution began in 1789 and led to the end of absolute monarchy and",  # dangling "and"
        PROSE.replace(" to the sea.", " to the sea. Over thousands of years this constant movement of water slowly "
                                      "shapes valleys and coastlines across"),  # stops mid-sentence
        "Here is the code:\n```python\nprint('hello')\n",  # unclosed fence
        "To bake bread you need the following ingredients:",  # stops before the list
        "Some well-known prime numbers are 2, 3, 5, 7, 11...",
        "def area(w, h):\n    result = compute(w,\n",  # code stopping in a call
        "int main() {\n    int x = 5;\n    if (x > 3) {\n        printf(\"big\");\n",  # block never closed
        "Steps:\n1. Preheat the oven.\n2. Mix the flour and water.\n3.",  # bare list number
    ]
    fine = [
        "int add(int a, int b) {\n    return a + b;\n}",  # code ending in }
        "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",  # code ending in )
        "#!/bin/bash\nfor f in *.txt; do\n    echo \"$f\"\ndone",  # shell ending on a keyword
        "- Apples\n- Pears\n- Bananas and cherries",  # a list item is not a sentence
        "The answer is A",  # a capital label, not a dangling article
        "Positive",
        PROSE,
        "Here is an example:\n```python\nprint('hello')\n```",
        "Dear Sam,\n\nThank you for the lovely evening. I hope we meet again soon.\n\nBest wishes,\nAlex Moore",
    ]
    assert flag(store, "truncated", cut) == [True] * len(cut)
    assert flag(store, "truncated", fine) == [False] * len(fine)


def test_repetition(store):
    looping = "\n".join(["I hope this helps you with your question."] * 8)
    ngram_loop = "the model keeps saying the same thing " * 12
    code = "if (a) {\n    x();\n}\nif (b) {\n    y();\n}\nif (c) {\n    z();\n}"
    cols, _ = audit(store, [("Explain.", looping), ("Explain.", ngram_loop), ("Explain.", PROSE), ("Code.", code)])
    assert cols["quality_repetitive"].to_list() == [True, True, False, False]
    score = cols["quality_repetition"].to_list()
    assert score[0] > 0.8 and score[1] > 0.8 and score[2] < 0.1


def test_non_english(store):
    foreign = [
        "保持均衡饮食，多吃水果和蔬菜。每天锻炼身体，至少三十分钟。",
        "Здоровое питание и регулярные физические упражнения помогают сохранить здоровье.",
        "La photosynthèse est le processus par lequel les plantes transforment la lumière du soleil en énergie "
        "pour leur croissance et elle produit de l'oxygène.",
        "El agua es un recurso muy importante para la vida y por eso debemos cuidarla con responsabilidad.",
    ]
    english = [
        PROSE,
        "The Chinese greeting 你好 (nǐ hǎo) means hello and is used in most everyday situations.",
        "x = 3\ny = 4\nprint(x + y)",  # identifiers are no language
        "hǎo",
        "😌😊",
    ]
    assert flag(store, "non_english", foreign) == [True] * len(foreign)
    assert flag(store, "non_english", english) == [False] * len(english)
    assert flag(store, "non_english", foreign, expected_language=None) == [False] * len(foreign)


def test_flagged_and_flag_names_and_chat_records(store):
    answer = "As an AI language model, I cannot diagnose you, but you should"
    chat = Record(messages=[Message(role="user", content="Give me advice on my rash."),
                            Message(role="assistant", content=answer)])
    cols, summary = audit(store, [chat, ("Say hi.", "Hi there!"), ("Say hi.", "")])
    assert cols["quality_flags"].to_list() == ["refusal,truncated", "", "empty_output"]
    assert cols["quality_flagged"].to_list() == [True, False, True]
    assert summary["flagged_records"] == 2 and summary["flagged_rate"] == pytest.approx(2 / 3)
    assert summary["flags"]["refusal"] == {"count": 1, "rate": pytest.approx(1 / 3)}
    assert set(summary["flags"]) == set(FLAGS)
    assert summary["examples"]["refusal"][0]["pos"] == 0
    assert summary["examples"]["refusal"][0]["response"].startswith("As an AI language model")


# ---- real data --------------------------------------------------------------------------------

def seed_rows(shared_data):
    return [json.loads(line) for line in
            (shared_data / "instructions/self_instruct_seed_tasks.jsonl").read_text().splitlines()]


def test_clean_real_data_flag_rate(store, shared_data):
    """Measured: seed tasks 7/175 = 4.0% (5 one-character labels, 1 "And so forth…", 1 translation
    into Chinese); CodeAlpaca 7/4535 = 0.15% (6 one-character outputs, 1 answer identical to the
    buggy code it was asked to fix). Bounds: 6% and 0.5%."""
    seed = import_source(store, str(shared_data / "instructions/self_instruct_seed_tasks.jsonl"), "seed")
    code = import_source(store, str(shared_data / "instructions/codealpaca_new.json"), "code")
    s = run_audit(store, seed.id, [Quality()])["auditors"]["quality"]
    c = run_audit(store, code.id, [Quality()])["auditors"]["quality"]
    assert s["records"] == 175 and c["records"] == 4535
    assert s["flagged_rate"] <= 0.06, s["flags"]
    assert c["flagged_rate"] <= 0.005, c["flags"]
    for summary in (s, c):  # nothing in these human-written or curated sets is a refusal or a loop
        assert summary["flags"]["refusal"]["count"] == 0
        assert summary["flags"]["repetitive"]["count"] == 0
        assert summary["flags"]["empty_output"]["count"] == 0
    # CodeAlpaca's C++ answers all open with #include <iostream>: the homogeneity figures show it
    assert c["style"]["top_opener_2_words"]["opener"] == "include iostream"
    assert 0.10 < c["style"]["top_opener_2_words"]["share"] < 0.2
    assert c["style"]["instruction_top_first_word"]["word"] == "write"
    assert len(c["style"]["top_openers"]) == 10


def test_planted_bad_records_are_exactly_the_new_flags(store, shared_data, tmp_path):
    rows = seed_rows(shared_data)
    clean = imported_version(store, "seed", rows)
    run_audit(store, clean.id, [Quality()])
    before = audit_columns(store, clean)
    baseline = set(before.filter(pl.col("quality_flagged"))["_pos"].to_list())

    # a real multi-sentence answer, cut after a "the" in its second half
    prose = next(r["instances"][0]["output"] for r in rows
                 if len(r["instances"][0]["output"].split()) > 60 and "\n" not in r["instances"][0]["output"])
    cut = prose[: prose.index(" the ", len(prose) // 2) + len(" the")]
    first_sentence = rows[0]["instances"][0]["output"].split(". ")[0] + "."

    def task(i, output):
        return {"id": f"planted_{i}", "name": "planted", "instruction": rows[i]["instruction"],
                "instances": [{"input": rows[i]["instances"][0]["input"], "output": output}],
                "is_classification": False}

    planted = {
        "refusal": task(0, "I'm sorry, but as an AI language model I cannot provide dietary advice."),
        "truncated": task(1, cut),
        "empty_output": task(2, ""),
        "non_english": task(3, "1. 保持均衡饮食，多吃水果和蔬菜。\n2. 每天锻炼身体，至少三十分钟。\n"
                               "3. 保证充足的睡眠。"),
        "repetitive": task(4, "\n".join([first_sentence] * 8)),
    }
    version = imported_version(store, "seed", rows + list(planted.values()))
    summary = run_audit(store, version.id, [Quality()])["auditors"]["quality"]
    cols = audit_columns(store, version)
    flagged = cols.filter(pl.col("quality_flagged"))
    new = flagged.filter(~pl.col("_pos").is_in(list(baseline)))
    assert new["_pos"].to_list() == list(range(len(rows), len(rows) + len(planted)))
    assert new["quality_flags"].to_list() == list(planted)  # each with exactly its own flag
    assert summary["flagged_records"] == len(baseline) + len(planted)
    # the clean rows kept their flags
    assert cols.head(len(rows))["quality_flags"].to_list() == before["quality_flags"].to_list()
    # and the flags filter them out
    kept = filter_version(store, version.id, "NOT quality_flagged", "seed")
    assert kept.records == len(rows) - len(baseline)


def test_style_homogeneity_reports_a_template_opener(store, shared_data):
    rows = seed_rows(shared_data)[:50]
    records = []
    for i, r in enumerate(rows):
        out = r["instances"][0]["output"]
        records.append((r["instruction"], f"Sure! Here is the answer: {out}" if i % 5 < 3 else out))  # 60%
    cols, summary = audit(store, records)
    style = summary["style"]
    assert style["top_opener_3_words"] == {"opener": "sure here is", "count": 30, "share": pytest.approx(0.6)}
    assert style["top_opener_1_word"]["opener"] == "sure" and style["top_opener_1_word"]["share"] == pytest.approx(0.6)
    assert style["top_openers"][0] == {"opener": "sure here is", "count": 30, "share": 0.6}
    assert style["common_openers"] == ["sure here is"]
    assert cols["quality_common_opener"].to_list() == [i % 5 < 3 for i in range(50)]
    assert style["common_opener_records"] == 30
    # a style signal of the version, not a defect of the record
    assert "common_opener" not in ",".join(cols["quality_flags"].to_list())
    first = pl.Series([r[0].split()[0].lower() for r in records]).value_counts(sort=True)
    assert style["instruction_top_first_word"]["count"] == first["count"][0]
    # with the share threshold above 0.6 nothing is common
    _, summary = audit(store, records, common_opener_share=0.7)
    assert summary["style"]["common_openers"] == [] and summary["style"]["common_opener_records"] == 0


def test_child_version_recomputes_nothing_for_shared_records(store, shared_data, tmp_path, monkeypatch):
    def cache_use(ref) -> tuple[int, int]:
        got = run_audit(store, ref, [Quality()])["auditors"]["quality"]["cache"]
        return got["hits"], got["misses"]

    rows = seed_rows(shared_data)
    parent = imported_version(store, "seed", rows)
    unique = store.ids(parent).n_unique()
    assert cache_use(parent.id) == (0, unique)

    child = store.filter(parent.id, "source_row <= 100", "seed")
    first = audit_columns(store, parent).head(child.records).drop("_pos")
    assert cache_use(child.id) == (store.ids(child).n_unique(), 0)
    assert audit_columns(store, child).drop("_pos").drop("quality_common_opener").equals(
        first.drop("quality_common_opener"))

    # a new version with three new records computes exactly those three
    extra = [{"instruction": f"Name a colour ({i}).", "output": f"Colour number {i} is blue."} for i in range(3)]
    mixed = imported_version(store, "mixed", [
        {"instruction": r["instruction"], "input": r["instances"][0]["input"], "output": r["instances"][0]["output"]}
        for r in rows[:20]] + extra)
    hits, misses = cache_use(mixed.id)
    assert misses == 3 and hits == store.ids(mixed).n_unique() - 3

    # another configuration is another cache
    other = run_audit(store, child.id, [Quality(dataclasses.replace(QualityConfig(), short_min_words=3))])
    assert other["auditors"]["quality"]["cache"]["hits"] == 0
