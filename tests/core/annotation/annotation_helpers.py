"""Helpers shared by the annotation tests (importable as `annotation_helpers`: pyproject's pytest
pythonpath lists this folder)."""

from __future__ import annotations

from helpers import written_version

from assay.core import annotation as A

PASSWORD = "correct horse"


def make_version(store, n: int, name: str = "t", extra_rows=()):
    rows = [{"instruction": f"task {i}", "output": f"answer {i}", "metadata": {"k": i}} for i in range(n)]
    return written_version(store, name, rows + list(extra_rows))


def work_all(store, user, sid, label_of):
    """Decide every record the user is handed; returns the record ids in the order handed out."""
    seen = []
    while (item := A.next_item(store, user, sid)) is not None:
        A.decide(store, user, sid, item.record_id, label_of(item), revision=item.revision)
        seen.append(item.record_id)
    return seen
