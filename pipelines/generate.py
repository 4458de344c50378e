"""Generators: turn seeds (records, raw rows) into new records, committed as a new version.

The base is deliberately small (as datatrove's pipeline step): a generator is a class with a `name`,
a `Config` dataclass whose fields carry their help text (the same object drives the CLI, the app
forms and the version's params), and one `run` method that returns a `GenerationReport`.

Shared pieces every generator uses:
- `load_prompt(name)` / `render(template, row)`: prompts are Jinja2 files in `pipelines/prompts/`
  (editable without touching code); StrictUndefined makes a template that names a missing field fail
  with one line naming the template and the field, instead of rendering an empty string.
- `commit_records(...)`: fills every record's provenance (generator, template id, model, sampling
  params, parent ids, source = run id) and commits them as one version; nothing is committed if the
  generator raised before it.
- LLM failures are data: they stay in the run journal (`assay.core.llm.journal.run_failures`) with the
  raw reply, are counted in `failed`, and are listed in the report.

`generate(store, kind, name, config_dict, llm_config, run_id)` is the one entry point the CLI and
the app call.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import re
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import jinja2

from assay.core.errors import AssayError
from assay.core.llm import LLMConfig, Result
from assay.core.options import options
from assay.core.records import Provenance, Record, rows_to_table
from assay.core.store import Manifest, Store, VersionWriter

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"


# ---- the report --------------------------------------------------------------------------------

@dataclass
class GenerationReport:
    """What a generator run produced. `requested` counts LLM requests (0 for LLM-free generators);
    `failed` those that failed (transport error or unparsable reply), each listed in `failures`."""

    generator: str
    version: str | None
    ref: str | None
    records: int
    requested: int = 0
    failed: int = 0
    run_id: str | None = None
    filtered: dict[str, int] = field(default_factory=dict)  # drop reason -> count
    failures: list[dict[str, Any]] = field(default_factory=list)  # key, error_kind, error, raw
    details: dict[str, Any] = field(default_factory=dict)  # generator-specific (e.g. rejected instructions)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def failure_rows(results: list[Result]) -> list[dict[str, Any]]:
    """The failed results of a batch, as the report lists them (the journal holds the full story)."""
    return [{"key": r.key, "error_kind": r.error_kind, "error": r.error, "raw": r.raw, "attempts": r.attempts}
            for r in results if not r.ok]


# ---- the base class ----------------------------------------------------------------------------

class Generator(abc.ABC):
    """One generator. Subclasses set `name` and a `Config` dataclass, and implement `run`."""

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

    @abc.abstractmethod
    def run(self, store: Store, name: str, *, llm: LLMConfig | None = None, run_id: str | None = None,
            parents: list[str] | None = None) -> GenerationReport:
        """Generate, commit a new version of dataset `name`, and report."""


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
    from assay.pipelines.self_instruct import SelfInstruct
    from assay.pipelines.templates import FlanTemplates

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
