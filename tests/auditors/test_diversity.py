"""The diversity auditor: exact figures checked against brute force and the `vendi-score` package on
real embeddings (the Self-Instruct seed tasks' prompts, all-MiniLM-L6-v2 from the offline package),
the text figures on hand-made data, and its per-record columns and map."""

import itertools
import json
import math

import numpy as np
import polars as pl
import pytest
from auditor_helpers import seed_tasks
from helpers import imported_version, write_jsonl

from assay.auditors.base import AuditContext
from assay.auditors.diversity import (
    Diversity,
    DiversityConfig,
    auto_clusters,
    distinct_n,
    first_words,
    length_stats,
    mean_pairwise_cosine_distance,
    vendi_score,
)
from assay.auditors.embeddings import embed_records
from assay.auditors.runner import run_audit
from assay.core.audits import audit_columns, audit_detail
from assay.core.errors import AssayError
from assay.core.records import with_text
from assay.core.store import Store
from assay.pipelines.importer import import_source

SEED_TASKS = 100  # the first 100 seed tasks: embedding is the cost of this file
REPEATS = 4  # the version holds each of them 4 times: n = 400 > d = 384, but only 100 records to embed
PROMPT = DiversityConfig(column="prompt")  # prompts are short: the cheapest real text to embed

_MODULE: dict = {}


@pytest.fixture
def seeded(shared_data, tmp_path_factory):
    """One workspace for the module (built on first use): seed tasks 4 times over, audited once."""
    if not _MODULE:
        base = tmp_path_factory.mktemp("diversity")
        rows = seed_tasks(shared_data, SEED_TASKS)
        store = Store(base / "ws")
        version = import_source(store, str(write_jsonl(base / "seed.jsonl", rows * REPEATS)), "seed")
        summary = run_audit(store, version.id, [Diversity(PROMPT)])["auditors"]["diversity"]
        _MODULE.update(store=store, version=version, summary=summary, rows=rows, base=base)
    return _MODULE


def _embeddings(seeded, ref) -> np.ndarray:
    """The auditor's embeddings of a version, from the cache (asserted: nothing is computed again)."""
    store = seeded["store"]
    records = with_text(store.read(ref))
    stats: dict = {}
    x = embed_records(AuditContext(store, ""), records, "prompt", PROMPT.model, stats=stats)
    assert stats["computed"] == 0
    return x


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # vendi-score 0.0.3 uses scipy.sparse.csr
def test_vendi_equals_the_reference_package(seeded):
    from vendi_score import vendi

    x = _embeddings(seeded, seeded["version"])
    assert x.shape == (SEED_TASKS * REPEATS, 384)
    x64 = x.astype(np.float64)  # the reference in float32 runs eigvalsh in single precision (~1e-4 off)
    reference = vendi.score_dual(x64)  # normalises the rows, eigenvalues of X^T X / n
    assert seeded["summary"]["vendi_score"] == pytest.approx(reference, abs=1e-6)  # n > d: covariance path
    assert vendi.score_K(x64 @ x64.T, normalize=True) == pytest.approx(reference, abs=1e-6)

    unique = x[:SEED_TASKS]  # n < d: the kernel path, and the covariance path forced, agree with both
    ref_unique = vendi.score_dual(unique.astype(np.float64))
    assert vendi_score(unique) == pytest.approx(ref_unique, abs=1e-6)
    assert vendi_score(unique, method="covariance") == pytest.approx(ref_unique, abs=1e-6)
    assert vendi_score(unique, method="kernel") == pytest.approx(ref_unique, abs=1e-6)
    # every record 4 times over: the same eigenvalues, the same effective number of records
    assert ref_unique == pytest.approx(reference, abs=1e-6)
    assert 1 < reference < SEED_TASKS


def test_mean_pairwise_distance_equals_brute_force(seeded):
    x = _embeddings(seeded, seeded["version"]).astype(np.float64)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    n = len(unit)
    brute = np.mean([1.0 - unit[i] @ unit[j] for i, j in itertools.combinations(range(0, n, 5), 2)])
    assert mean_pairwise_cosine_distance(x[::5]) == pytest.approx(brute, abs=1e-12)
    iu = np.triu_indices(n, k=1)
    full = float((1.0 - unit @ unit.T)[iu].mean())
    assert seeded["summary"]["mean_pairwise_cosine_distance"] == pytest.approx(full, abs=1e-12)
    rng = np.random.default_rng(3)  # unnormalised rows: cosine, not dot product
    y = rng.normal(size=(40, 7)) * rng.uniform(0.1, 10, size=(40, 1))
    yu = y / np.linalg.norm(y, axis=1, keepdims=True)
    brute = np.mean([1.0 - yu[i] @ yu[j] for i, j in itertools.combinations(range(40), 2)])
    assert mean_pairwise_cosine_distance(y) == pytest.approx(brute, abs=1e-12)
    assert mean_pairwise_cosine_distance(y[:1]) is None


def _near_copies(n: int) -> list[dict]:
    """n rewordings of one request and its answer: a set with almost no diversity."""
    verbs = ["Write", "Compose", "Create", "Draft"]
    sizes = ["short", "brief", "little", "small", "tiny"]
    places = ["sea", "ocean"]
    rows = []
    for k, (verb, size, place) in enumerate(itertools.product(verbs, sizes, places)):
        rows.append({"instruction": f"{verb} a {size} poem about the {place}.",
                     "output": f"The {place} rolls in beneath a grey sky,\nthe gulls {['call', 'cry'][k % 2]} "
                               f"and the waves reply."})
    return rows[:n]


def test_a_varied_set_is_more_diverse_than_near_copies(seeded, tmp_path):
    store = seeded["store"]
    varied = imported_version(store, "varied", seeded["rows"][:40])
    copies = imported_version(store, "copies", _near_copies(40))
    config = DiversityConfig(column="prompt", clusters=4)
    v = run_audit(store, varied.id, [Diversity(config)])["auditors"]["diversity"]
    c = run_audit(store, copies.id, [Diversity(config)])["auditors"]["diversity"]
    assert v["embedding"]["computed"] == 0  # the seed prompts are cached already
    assert v["vendi_score"] > 3 * c["vendi_score"]
    assert v["mean_pairwise_cosine_distance"] > 2 * c["mean_pairwise_cosine_distance"]
    assert v["distinct_1"] > c["distinct_1"] and v["distinct_2"] > c["distinct_2"]
    assert v["top_instruction_verb_share"] < c["top_instruction_verb_share"]
    assert c["top_instruction_verb_share"] == 0.25  # write / compose / create / draft, 10 each


def test_columns_map_and_summary(seeded):
    store, version, summary = seeded["store"], seeded["version"], seeded["summary"]
    n = SEED_TASKS * REPEATS
    cols = audit_columns(store, version)
    assert cols.columns == ["_pos", "diversity_cluster", "diversity_x", "diversity_y"]
    assert cols.height == n and cols.null_count().sum_horizontal().item() == 0
    k = auto_clusters(n)
    assert k == round(math.sqrt(n / 2)) == 14
    assert summary["clusters"] == k and set(cols["diversity_cluster"].unique()) == set(range(k))
    # a record repeated in the version has one embedding: one cluster, one point on the map
    first, again = cols[:SEED_TASKS], cols[SEED_TASKS:2 * SEED_TASKS]
    assert first["diversity_cluster"].to_list() == again["diversity_cluster"].to_list()
    np.testing.assert_allclose(first["diversity_x"].to_numpy(), again["diversity_x"].to_numpy(), atol=1e-9)
    sizes = cols["diversity_cluster"].value_counts()["count"].to_numpy()
    p = sizes / n
    assert summary["cluster_entropy"] == pytest.approx(-(p * np.log(p)).sum(), abs=1e-6)
    assert summary["effective_clusters"] == pytest.approx(math.exp(summary["cluster_entropy"]), abs=1e-3)

    map_frame = audit_detail(store, version, "diversity", "map")
    assert map_frame.columns == ["id", "x", "y", "cluster"]
    assert map_frame["id"].to_list() == store.read(version)["id"].to_list()
    assert map_frame["x"].to_list() == cols["diversity_x"].to_list()
    assert map_frame["cluster"].to_list() == cols["diversity_cluster"].to_list()
    clusters = audit_detail(store, version, "diversity", "clusters")
    assert clusters["size"].sum() == n and clusters.height == k

    json.loads(json.dumps(summary))  # JSON-able, no numpy scalars
    assert summary["records"] == n and summary["vendi_score_max"] == 384
    assert summary["embedding"]["unique_records"] == SEED_TASKS
    assert summary["embedding"]["computed"] == SEED_TASKS
    assert summary["top_instruction_verb"] == "write"
    hist = summary["histograms"]["prompt_chars"]
    assert sum(hist["counts"]) == n and len(hist["edges"]) == len(hist["counts"]) + 1
    for key in ("prompt_chars", "prompt_words", "response_chars", "response_words"):
        s = summary[key]
        assert s["min"] <= s["p5"] <= s["p25"] <= s["p50"] <= s["p75"] <= s["p95"] <= s["max"]


def test_explicit_cluster_count_and_bad_settings(seeded):
    store, version = seeded["store"], seeded["version"]
    summary = run_audit(store, version.id, [Diversity(DiversityConfig(column="prompt", clusters=5))])
    assert summary["auditors"]["diversity"]["clusters"] == 5
    for bad, match in [({"clusters": 0}, "clusters"), ({"clusters": "many"}, "clusters"),
                       ({"map_method": "tsne"}, "map_method"), ({"column": "output"}, "column"),
                       ({"top_openers": 0}, "top_openers")]:
        with pytest.raises(AssayError, match=match):
            run_audit(store, version.id, [Diversity(DiversityConfig(**{"column": "prompt", **bad}))])


def test_umap_map_needs_its_package(seeded):
    import importlib.util

    store, version = seeded["store"], seeded["version"]
    auditor = Diversity(DiversityConfig(column="prompt", map_method="umap"))
    if importlib.util.find_spec("umap") is None:
        with pytest.raises(AssayError, match="umap-learn"):
            run_audit(store, version.id, [auditor])
    else:
        assert run_audit(store, version.id, [auditor])["auditors"]["diversity"]["map_method"] == "umap"


# ---- the text figures, exactly, on hand-made data ------------------------------------------------

def test_distinct_n_counts_ngrams_within_each_text():
    texts = pl.Series(["The cat sat.", "the cat ran", "", None, "Dog!"])
    # words: [the cat sat] [the cat ran] [] [] [dog] -> 7 unigrams, 5 unique (the cat sat ran dog)
    assert distinct_n(texts, 1) == {"unique": 5, "total": 7, "ratio": 5 / 7}
    # bigrams: the cat, cat sat | the cat, cat ran | (none across texts) -> 4 total, 3 unique
    assert distinct_n(texts, 2) == {"unique": 3, "total": 4, "ratio": 3 / 4}
    assert distinct_n(pl.Series(["", None]), 2) == {"unique": 0, "total": 0, "ratio": 0.0}


def test_first_words_and_lengths():
    prompts = pl.Series(["Write a poem.", "write code", "  Explain gravity", "**Write** more", "...", "Why?"])
    fw = first_words(prompts, 2)
    assert fw["top"] == [{"word": "write", "count": 3, "share": 0.5},
                         {"word": "explain", "count": 1, "share": round(1 / 6, 4)}]
    assert fw["top_share"] == 0.5 and fw["distinct"] == 3 and fw["without_word"] == 1
    assert fw["top_n_share"] == round(4 / 6, 4)

    stats, hist = length_stats(np.arange(1, 101))
    assert stats["mean"] == 50.5 and stats["min"] == 1 and stats["max"] == 100
    assert stats["p50"] == 50.5 and stats["p5"] == pytest.approx(5.95, abs=0.05)
    assert sum(hist["counts"]) == 100 and len(hist["counts"]) == 20
    assert hist["edges"][0] == 0.0 and hist["edges"][-1] == pytest.approx(99.0, abs=0.1)  # p99; 100 in the last bin


def test_text_figures_read_in_blocks_equal_the_whole_version(seeded, monkeypatch):
    """The reduce reads the version TEXT_BLOCK_ROWS rows at a time: n-grams, first words and lengths
    merged over blocks must be the figures of all the texts at once (a block of 7 rows, 400 rows)."""
    from assay.auditors import diversity

    store, version = seeded["store"], seeded["version"]
    monkeypatch.setattr(diversity, "TEXT_BLOCK_ROWS", 7)
    blocked = run_audit(store, version.id, [Diversity(PROMPT)])["auditors"]["diversity"]
    whole, records = seeded["summary"], with_text(store.read(version.id))
    keys = ("distinct_1", "distinct_2", "response_unigrams", "response_bigrams", "prompt_chars", "response_words",
            "histograms", "instruction_verbs", "response_openers", "vendi_score", "clusters")
    assert {k: blocked[k] for k in keys} == {k: whole[k] for k in keys}
    assert blocked["distinct_2"] == round(distinct_n(records["response"], 2)["ratio"], 6)
    assert blocked["response_openers"] == first_words(records["response"], PROMPT.top_openers)
