"""The catalog keeps one SQLite connection open per thread and catalog file. What must hold:
operations reuse it; a catalog deleted and created again at the same path is seen as the new file;
inside a write transaction, a read goes through another connection and sees only committed rows;
other threads get connections of their own; a failed write leaves the next one working."""

from __future__ import annotations

import shutil
import sqlite3
import threading

import pytest

from assay.core.catalog import Catalog

TABLE = "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE)"


def _opens(monkeypatch) -> list[int]:
    opened = []
    real = Catalog.connect

    def counting(self):
        opened.append(1)
        return real(self)

    monkeypatch.setattr(Catalog, "connect", counting)
    return opened


def test_operations_reuse_one_connection(tmp_path, monkeypatch):
    opened = _opens(monkeypatch)
    catalog = Catalog(tmp_path / "catalog.sqlite")
    catalog.ensure_schema(TABLE)
    for i in range(20):
        with catalog.write() as conn:
            conn.execute("INSERT INTO notes (text) VALUES (?)", (f"n{i}",))
        assert catalog.query("SELECT count(*) FROM notes")[0][0] == i + 1
    assert len(opened) == 1
    # the schema is applied once per open connection, not once a call (each would be an fsync)
    catalog.ensure_schema(TABLE)
    assert len(opened) == 1


def test_a_catalog_deleted_and_created_again_is_the_new_file(tmp_path):
    folder = tmp_path / "ws"
    catalog = Catalog(folder / "catalog.sqlite")
    catalog.ensure_schema(TABLE)
    with catalog.write() as conn:
        conn.execute("INSERT INTO notes (text) VALUES ('old')")
    shutil.rmtree(folder)
    again = Catalog(folder / "catalog.sqlite")
    again.ensure_schema(TABLE)  # the new file needs the table: a remembered "already applied" would skip it
    assert again.query("SELECT text FROM notes") == []
    with again.write() as conn:
        conn.execute("INSERT INTO notes (text) VALUES ('new')")
    assert [r[0] for r in Catalog(folder / "catalog.sqlite").query("SELECT text FROM notes")] == ["new"]


def test_a_read_inside_a_write_sees_only_committed_rows(tmp_path):
    catalog = Catalog(tmp_path / "catalog.sqlite")
    catalog.ensure_schema(TABLE)
    with catalog.write() as conn:
        conn.execute("INSERT INTO notes (text) VALUES ('pending')")
        assert catalog.query("SELECT count(*) FROM notes")[0][0] == 0
    assert catalog.query("SELECT count(*) FROM notes")[0][0] == 1


def test_threads_use_connections_of_their_own(tmp_path):
    catalog = Catalog(tmp_path / "catalog.sqlite")
    catalog.ensure_schema(TABLE)
    errors = []

    def work(n):
        try:
            for i in range(25):
                with catalog.write() as conn:
                    conn.execute("INSERT INTO notes (text) VALUES (?)", (f"t{n}-{i}",))
        except Exception as exc:  # a connection shared across threads raises ProgrammingError
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    work(99)
    for t in threads:
        t.join()
    assert errors == []
    assert catalog.query("SELECT count(*) FROM notes")[0][0] == 125


def test_a_failed_write_rolls_back_and_the_next_write_works(tmp_path):
    catalog = Catalog(tmp_path / "catalog.sqlite")
    catalog.ensure_schema(TABLE)
    with catalog.write() as conn:
        conn.execute("INSERT INTO notes (text) VALUES ('a')")
    with pytest.raises(sqlite3.IntegrityError):
        with catalog.write() as conn:
            conn.execute("INSERT INTO notes (text) VALUES ('b')")
            conn.execute("INSERT INTO notes (text) VALUES ('a')")  # UNIQUE: the whole transaction goes
    with pytest.raises(RuntimeError):
        with catalog.write() as conn:
            conn.execute("INSERT INTO notes (text) VALUES ('c')")
            raise RuntimeError("the caller fails mid-transaction")
    with catalog.write() as conn:
        conn.execute("INSERT INTO notes (text) VALUES ('d')")
    assert sorted(r[0] for r in catalog.query("SELECT text FROM notes")) == ["a", "d"]
