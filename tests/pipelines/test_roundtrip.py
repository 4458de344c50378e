"""Property: any records, imported and exported, come back exactly (text, chat turns, metadata)."""

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assay.core.store import Store
from assay.pipelines.exporter import export_version
from assay.pipelines.importer import import_source

text = st.text(st.characters(codec="utf-8"), max_size=40)  # any Unicode scalar, "" included
meta_key = st.from_regex(r"m_[a-z0-9_]{1,8}", fullmatch=True)
meta_value = st.one_of(st.none(), st.booleans(), st.integers(-2**53, 2**53), text, st.lists(text, max_size=3))
metadata = st.dictionaries(meta_key, meta_value, max_size=4)
alpaca = st.builds(lambda i, x, o, m: {"instruction": i, "input": x, "output": o, **m}, text, text, text, metadata)
role = st.sampled_from(["system", "user", "assistant", "tool"])
message = st.builds(lambda r, c: {"role": r, "content": c}, role, text)
chat = st.builds(lambda ms, m: {"messages": ms, **m}, st.lists(message, min_size=1, max_size=4), metadata)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(alpaca, chat), min_size=1, max_size=12))
def test_import_then_export_gives_the_same_records(rows):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "in.jsonl"
        src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        store = Store(tmp / "ws")
        version = import_source(store, str(src), "rt")
        assert version.records == len(rows)
        export_version(store, version.id, str(tmp / "out.jsonl"))
        back = [json.loads(line) for line in (tmp / "out.jsonl").read_text(encoding="utf-8").split("\n")[:-1]]
        assert back == rows
        # and through Parquet the record ids survive (the content is what the id hashes)
        again = import_source(store, str(tmp / "out.jsonl"), "rt2")
        assert store.read(again)["id"].to_list() == store.read(version)["id"].to_list()
