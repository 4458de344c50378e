import hashlib
import json

from assay.core.records import Message, Provenance, Record, record_id


def test_id_is_the_documented_hash_of_content_only():
    rec = Record(instruction="Add", input="2, 3", output="5",
                 provenance=Provenance(source="a.jsonl", model="m"), metadata={"k": 1})
    canonical = json.dumps(["Add", "2, 3", "5", None], ensure_ascii=False, separators=(",", ":"))
    assert rec.id == hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()
    # provenance and metadata describe the row, not the record
    other = Record(instruction="Add", input="2, 3", output="5", provenance=Provenance(source="b.csv"))
    assert other.id == rec.id


def test_id_changes_with_every_content_field():
    base = dict(instruction="a", input="b", output="c")
    ids = {Record(**base).id}
    for field in base:
        ids.add(Record(**{**base, field: base[field] + "x"}).id)
    ids.add(Record(**base, messages=[Message(role="user", content="a")]).id)
    assert len(ids) == 5


def test_field_boundaries_cannot_be_forged():
    # a naive concatenation would hash "ab" + "" and "a" + "b" alike
    assert record_id("ab", "", "", None) != record_id("a", "b", "", None)


def test_chat_id_ignores_extra_message_keys_and_key_order():
    a = record_id("", "", "", [{"role": "user", "content": "hi"}])
    b = record_id("", "", "", [{"content": "hi", "role": "user", "name": "x"}])
    assert a == b


def test_row_round_trip_keeps_everything():
    rec = Record(messages=[Message(role="user", content="héllo"), Message(role="assistant", content="")],
                 provenance=Provenance(source="gen-run-1", generator="self-instruct", template="t1", model="smol",
                                       sampling_params={"temperature": 0.7}, parent_ids=["p1", "p2"]),
                 metadata={"topic": "greeting", "n": [1, 2]})
    row = rec.to_row()
    assert row["id"] == rec.id
    back = Record.from_row(row)
    assert back == rec and back.is_chat
