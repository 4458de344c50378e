"""Generators: turn seeds (records, raw rows) into new records, committed as a new version.

The base owns the run, as datatrove's `BaseFilter` owns counting and dropping and distilabel's `Task`
leaves only formatting to the subclass. A generator is a class with a `name`, a `Config` dataclass
whose fields carry their help text (the same object drives the CLI, the app forms and the version's
params), `check()` for the config, and `generate(run)`: it reads its seeds, sends its requests with
`run.ask(...)`, turns replies into records with `run.record(...)`, and says why anything was left
out with `run.drop(reason, **detail)`. The base (`Generator.run` and `GenerationRun`) does the rest:
- the LLM client, opened on the first request and journalled under the run id, so a killed run
  resumes without re-sending what finished;
- provenance: every record names the generator, template, parent ids and source; records made from
  an LLM reply also the model that answered and the sampling parameters;
- failed requests are data: they stay in the run journal (`assay.core.llm.journal.run_failures`)
  with the raw reply, are counted in `failed` and listed in the report's `failures`;
- drops: `filtered` counts them by reason, `dropped` lists each with its detail;
- the commit (one version, nothing committed if the generator raised) and its params: the config,
  the LLM settings without the API key's variable name, the counts;
- the report.

Shared pieces for prompts: `load_prompt(name)` / `render(template, row)`: prompts are Jinja2 files in
`pipelines/prompts/` (editable without touching code); StrictUndefined makes a template that names a
missing field fail with one line naming the template and the field, instead of rendering "".

`generate(store, kind, name, config_dict, llm_config, run_id)` is the one entry point the CLI and
the app call.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import json
import re
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import jinja2

from assay.core.errors import AssayError
from assay.core.llm import LLMClient, LLMConfig, Request, Result
from assay.core.llm.journal import run_record
from assay.core.options import options
from assay.core.records import Provenance, Record, rows_to_table
from assay.core.store import Manifest, Store, VersionWriter

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"


# ---- the report --------------------------------------------------------------------------------

@dataclass
class GenerationReport:
    """What a generator run produced. `requested` counts LLM requests (0 for LLM-free generators);
    `failed` those that failed (transport error or unparsable reply), each listed in `failures`;
    `filtered` counts what was left out by reason, and `dropped` lists each with its detail."""

    generator: str
    version: str | None
    ref: str | None
    records: int
    requested: int = 0
    failed: int = 0
    run_id: str | None = None
    filtered: dict[str, int] = field(default_factory=dict)  # drop reason -> count
    failures: list[dict[str, Any]] = field(default_factory=list)  # key, error_kind, error, raw
    details: dict[str, Any] = field(default_factory=dict)  # generator-specific (e.g. kept instructions)
    dropped: list[dict[str, Any]] = field(default_factory=list)  # reason, then the generator's detail

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def failure_rows(results: list[Result]) -> list[dict[str, Any]]:
    """The failed results of a batch, as the report lists them (the journal holds the full story)."""
    return [{"key": r.key, "error_kind": r.error_kind, "error": r.error, "raw": r.raw, "attempts": r.attempts}
            for r in results if not r.ok]


# ---- one run -----------------------------------------------------------------------------------

class GenerationRun:
    """What a generator's `generate` works through: requests, records, drops, and what goes into the
    version's params (`params`), its lineage (`seed_parents`) and the report (`details`)."""

    def __init__(self, generator: str, store: Store, name: str, llm: LLMConfig | None, run_id: str | None):
        self.generator, self.store, self.name = generator, store, name
        self.llm = llm or LLMConfig()
        self.run_id = run_id or default_run_id(generator, name)
        self.results: list[Result] = []  # every request's result, in the order sent
        self.filtered: dict[str, int] = {}
        self.dropped: list[dict[str, Any]] = []
        self.params: dict[str, Any] = {}  # generator-specific version params (e.g. the seeds' label)
        self.details: dict[str, Any] = {}  # generator-specific report details
        self.seed_parents: list[str] = []  # versions the seeds came from: parents of the new version
        self._client: LLMClient | None = None

    def ask(self, requests: list[Request]) -> list[Result]:
        """Send `requests` (one batch, journalled under the run id); one Result per request, in order.
        The client (and the embedded server, when no endpoint is configured) stays up across batches."""
        if not requests:
            return []
        if self._client is None:
            self._client = LLMClient(self.llm).__enter__()
        results = self._client.run_batch(self.run_id, requests, self.store)
        self.results += results
        return results

    def drop(self, reason: str, **detail: Any) -> None:
        """Leave something out, and say why. `filtered` counts the reason up to its first ':'
        ("blacklisted:image" counts as "blacklisted"); `dropped` keeps the whole reason and detail."""
        base = reason.split(":")[0]
        self.filtered[base] = self.filtered.get(base, 0) + 1
        self.dropped.append({"reason": reason, **detail})

    def record(self, *, instruction: str, output: str, input: str = "", metadata: dict[str, Any] | None = None,
               template: str | None, parent_ids: list[str] | None = None, source: str | None = None,
               source_row: int | None = None) -> Record:
        """A new record with its provenance. `source` names a seed file the text was taken from;
        without it the record came from an LLM reply of this run, and at the commit it is stamped
        with the model that answered and the sampling parameters."""
        return Record(instruction=instruction, input=input, output=output, metadata=dict(metadata or {}),
                      provenance=provenance(generator=self.generator, template=template, run_id=self.run_id,
                                            parent_ids=parent_ids, source=source, source_row=source_row))

    def close(self) -> None:
        if self._client is not None:
            self._client.__exit__(None, None, None)
            self._client = None

    def commit(self, records: list[Record], config: Any, parents: list[str] | None) -> GenerationReport:
        """Stamp the LLM's records, commit them as the next version of `name`, and report."""
        sent = bool(self.results)
        model = run_record(self.store, self.run_id)["model"] if sent else self.llm.model
        sampling = sampling_params(self.llm)
        for rec in records:
            if rec.provenance.source == self.run_id:  # made from a reply of this run
                rec.provenance.model, rec.provenance.sampling_params = model, dict(sampling)
        failures = failure_rows(self.results)
        version_params: dict[str, Any] = {
            "generator": self.generator, "config": jsonable(config), **self.params,
            "run_id": self.run_id if sent else None, "requested": len(self.results), "failed": len(failures),
            "filtered": self.filtered}
        if sent:  # the endpoint's settings, without the name of the variable that holds its key
            version_params["llm"] = {k: v for k, v in self.llm.to_dict().items() if k != "api_key_env"}
        manifest = commit_records(self.store, self.name, records, generator=self.generator, params=version_params,
                                  parents=[*self.seed_parents, *(parents or [])])
        return GenerationReport(
            self.generator, manifest.id, manifest.ref, manifest.records, requested=len(self.results),
            failed=len(failures), run_id=self.run_id if sent else None, filtered=self.filtered, failures=failures,
            details={**self.details, **({"model": model} if sent else {})}, dropped=self.dropped)


def jsonable(config: Any) -> dict[str, Any]:
    """A config dataclass as JSON-safe params (paths and other values JSON cannot hold become text)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


# ---- the base class ----------------------------------------------------------------------------

class Generator(abc.ABC):
    """One generator. Subclasses set `name` and a `Config` dataclass, and implement `generate` (and
    `check`, for what in the config can be wrong before any seed is read)."""

    name: ClassVar[str]
    Config: ClassVar[type]
    uses_llm: ClassVar[bool] = True

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "Generator":
        known = {f.name for f in fields(cls.Config)}
        unknown = sorted(set(values or {}) - known)
        if unknown:
            raise AssayError(f"{cls.name}: unknown option(s) {', '.join(unknown)} "
                             f"(options: {', '.join(sorted(known))})")
        return cls(cls.Config(**(values or {})))

    def check(self) -> None:  # noqa: B027 (optional hook: most configs need a check, not all)
        """Raise AssayError for a config that cannot work (called before anything is read or sent)."""

    @abc.abstractmethod
    def generate(self, run: GenerationRun) -> list[Record]:
        """Read the seeds, make the records (sending requests through `run.ask`), drop with reasons."""

    def run(self, store: Store, name: str, *, llm: LLMConfig | None = None, run_id: str | None = None,
            parents: list[str] | None = None) -> GenerationReport:
        """Generate, commit a new version of dataset `name`, and report."""
        self.check()
        run = GenerationRun(self.name, store, name, llm, run_id)
        try:
            records = self.generate(run)
        finally:
            run.close()
        return run.commit(records, self.config, parents)


def default_run_id(generator: str, name: str) -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    return f"{generator}-{re.sub(r'[^A-Za-z0-9_.-]', '-', name)}-{stamp}"


# ---- prompt templates --------------------------------------------------------------------------

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False,
                          autoescape=False)


class TemplateError(AssayError):
    """A template that does not parse, or names a field the row does not have."""


def compile_template(source: str, template_id: str) -> jinja2.Template:
    try:
        template = _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template {template_id!r}: syntax error on line {exc.lineno}: {exc.message}") from None
    template.assay_id = template_id  # type: ignore[attr-defined]
    return template


@lru_cache(maxsize=None)
def _load_prompt_cached(path: str, mtime: float) -> jinja2.Template:
    return compile_template(Path(path).read_text(encoding="utf-8"), Path(path).stem)


def load_prompt(name: str, directory: str | Path | None = None) -> jinja2.Template:
    """The prompt template `NAME.j2` from `pipelines/prompts/` (or `directory`); its id is NAME."""
    path = Path(directory or PROMPTS_DIR) / f"{name}.j2"
    if not path.is_file():
        raise TemplateError(f"prompt template {name!r} not found ({path})")
    return _load_prompt_cached(str(path), path.stat().st_mtime)


_UNDEFINED = re.compile(r"'(?:[^']*\bobject\b[^']*|dict object)' has no attribute '([^']+)'|'([^']+)' is undefined")


def render(template: jinja2.Template, variables: dict[str, Any], *, where: str = "") -> str:
    """Render with StrictUndefined; a missing field raises TemplateError naming template and field."""
    tid = getattr(template, "assay_id", "?")
    try:
        return template.render(**variables)
    except jinja2.UndefinedError as exc:
        m = _UNDEFINED.search(str(exc))
        name = (m.group(1) or m.group(2)) if m else str(exc)
        have = ", ".join(sorted(k for k in variables if not k.startswith("_"))) or "none"
        raise TemplateError(f"template {tid!r} names field {name!r}, which the row does not have"
                            f"{' (' + where + ')' if where else ''}; fields: {have}") from None
    except jinja2.TemplateError as exc:
        raise TemplateError(f"template {tid!r}: {exc}") from None


# ---- committing --------------------------------------------------------------------------------

def provenance(*, generator: str, template: str | None, run_id: str | None, model: str | None = None,
               sampling_params: dict[str, Any] | None = None, parent_ids: list[str] | None = None,
               source: str | None = None, source_row: int | None = None) -> Provenance:
    """Provenance of a generated record: `source` is the run id (or the seed file for LLM-free runs)."""
    return Provenance(source=source or run_id, source_row=source_row, generator=generator, template=template,
                      model=model, sampling_params=dict(sampling_params or {}), parent_ids=list(parent_ids or []))


def sampling_params(llm: LLMConfig | None) -> dict[str, Any]:
    if llm is None:
        return {}
    return {"temperature": llm.temperature, "top_p": llm.top_p, "max_tokens": llm.max_tokens, "seed": llm.seed}


def commit_records(store: Store, name: str, records: list[Record], *, generator: str,
                   params: dict[str, Any], parents: list[str] | None = None) -> Manifest:
    """Commit `records` as the next version of `name` (operation `generate:<generator>`)."""
    for i, rec in enumerate(records):
        if rec.provenance.generator != generator:
            raise AssertionError(f"record {i} lacks its generator provenance")  # a bug, not user input
    writer = VersionWriter(store, name, f"generate:{generator}", params, parents=list(parents or []))
    if records:
        writer.add_table(rows_to_table([r.to_row() for r in records]))
    return writer.commit()


# ---- the entry point ---------------------------------------------------------------------------

def generators() -> dict[str, type[Generator]]:
    from assay.pipelines.chain_of_task import ChainOfTask
    from assay.pipelines.code_edits import CodeEdits
    from assay.pipelines.evol_instruct import EvolInstruct
    from assay.pipelines.flan import FlanTemplates
    from assay.pipelines.self_instruct import SelfInstruct

    return {g.name: g for g in (FlanTemplates, SelfInstruct, EvolInstruct, CodeEdits, ChainOfTask)}


def generator_options(kind: str) -> list[dict[str, Any]]:
    """The options of generator `kind` for a CLI or a form (its Config's fields: name, type as
    written in the dataclass, default, help). CLI form: `--NAME-WITH-DASHES`; lists comma-separated;
    dicts K=V,..."""
    known = generators()
    if kind not in known:
        raise AssayError(f"unknown generator {kind!r}: generators are {', '.join(sorted(known))}")
    return [o.as_dict() for o in options(known[kind].Config)]


def generate(store: Store, kind: str, name: str, config_dict: dict[str, Any] | None = None,
             llm_config: LLMConfig | dict[str, Any] | None = None, run_id: str | None = None,
             parents: list[str] | None = None) -> dict[str, Any]:
    """Run generator `kind` ('templates', 'self-instruct', 'evol-instruct', 'code-edits', 'chain-of-task')
    with options `config_dict`; commit a new version of `name`; return the report as a dict (version, ref,
    records, requested, failed, run_id, filtered, failures, details)."""
    known = generators()
    if kind not in known:
        raise AssayError(f"unknown generator {kind!r}: generators are {', '.join(sorted(known))}")
    gen = known[kind].from_dict(config_dict)
    if isinstance(llm_config, dict):
        llm_config = LLMConfig(**llm_config)
    return gen.run(store, name, llm=llm_config, run_id=run_id, parents=parents).to_dict()
