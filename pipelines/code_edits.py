"""Code edits from git history (InstructCoder style): commits become (instruction, code before, code after).

1. **Mine** a local repository with `git log` / `git show` (subprocess: no GitPython dependency): the
   last `max_commits` commits of `rev`, each hunk of each changed file a seed with the commit message,
   the file, its language (by extension), the code before and after (the hunk with `context_lines`
   lines of context) and the hunk's diff. Skipped, each with its reason: merge commits (their diff is
   a union of other commits'), binary files, generated files (lock files, minified, protobuf output:
   `generated` globs), vendored files (`vendored` folders), files of no known language, new and
   deleted files (no edit: nothing before, or nothing after), whitespace-only hunks, oversize hunks.
2. **Instruction**: the LLM writes the instruction a developer would give for the change, from the
   message and the code (`pipelines/prompts/code_edits_instruction.j2`). A failed call or an empty
   reply is `instruction_failed` (also in `failed`, with its raw reply); a reply under `min_words`
   words is `too_short`.

Record: instruction, input = code before, output = code after; the diff, commit, message, file and
language in metadata. Calls are keyed `instruction/SHORT_SHA/FILE_INDEX/HUNK_INDEX`.
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from assay.core.errors import AssayError
from assay.core.llm import ParseError, Request, reply_text
from assay.core.records import Record
from assay.pipelines.generate import (
    GenerationRun,
    Generator,
    load_prompt,
    render,
)

LANGUAGES = {
    ".py": "python", ".pyi": "python", ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript",
    ".jsx": "javascript", ".ts": "typescript", ".tsx": "typescript", ".java": "java", ".kt": "kotlin",
    ".scala": "scala", ".c": "c", ".h": "c", ".cc": "c++", ".cpp": "c++", ".cxx": "c++", ".hpp": "c++",
    ".cs": "c#", ".go": "go", ".rs": "rust", ".rb": "ruby", ".php": "php", ".swift": "swift",
    ".sh": "shell", ".bash": "shell", ".sql": "sql", ".r": "r", ".lua": "lua", ".pl": "perl", ".hs": "haskell",
    ".jl": "julia", ".dart": "dart", ".html": "html", ".css": "css", ".scss": "scss", ".vue": "vue",
    ".md": "markdown", ".rst": "restructuredtext", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml",
    ".json": "json", ".j2": "jinja", ".ipynb": None,  # notebooks: JSON with outputs, not code edits
}
GENERATED = ["*.lock", "package-lock.json", "npm-shrinkwrap.json", "pnpm-lock.yaml", "go.sum", "*.min.js",
             "*.min.css", "*.map", "*_pb2.py", "*_pb2_grpc.py", "*_pb2.pyi", "*.pb.go", "*.pb.cc", "*.pb.h",
             "*.generated.*", "*.g.dart"]
VENDORED = ["vendor", "vendors", "node_modules", "third_party", "third-party", "thirdparty", "_vendor",
            "site-packages", "external"]


@dataclass
class CodeEditsConfig:
    repo: str = field(default="", metadata={"help": "path to a local git repository (its working tree or .git)"})
    rev: str = field(default="HEAD", metadata={"help": "branch, tag or commit to walk back from"})
    max_commits: int = field(default=50, metadata={
        "help": "walk the last N commits of rev (merge commits among them are skipped)"})
    max_edits: int | None = field(default=None, metadata={
        "help": "send at most this many edits to the LLM; the rest are counted as 'enough'"})
    context_lines: int = field(default=3, metadata={"help": "lines of unchanged context around each hunk"})
    max_changed_lines: int = field(default=40, metadata={
        "help": "skip hunks with more added + removed lines than this (oversize)"})
    max_hunk_lines: int = field(default=120, metadata={
        "help": "skip hunks whose before or after code has more lines than this (oversize)"})
    languages: list[str] = field(default_factory=list, metadata={
        "help": "only files in these languages (python, javascript, ...); empty = every known language"})
    generated: list[str] = field(default_factory=lambda: list(GENERATED), metadata={
        "help": "file-name globs of generated files to skip (lock files, minified, protobuf output)"})
    vendored: list[str] = field(default_factory=lambda: list(VENDORED), metadata={
        "help": "folder names whose files are vendored code and skipped (at any depth)"})
    min_words: int = field(default=3, metadata={"help": "drop instructions with fewer words"})
    prompts_dir: str | None = field(default=None, metadata={
        "help": "folder with the prompt template (code_edits_instruction.j2); default: pipelines/prompts"})


# ---- git ----------------------------------------------------------------------------------------

def git(repo: str, *args: str) -> str:
    proc = subprocess.run(["git", "-C", repo, "-c", "core.quotepath=off", *args], capture_output=True)
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise AssayError(f"git {' '.join(args[:2])} in {repo}: {err[-1] if err else 'failed'}")
    return proc.stdout.decode("utf-8", "replace")


def check_repo(path: str) -> str:
    """The repository's top-level folder; AssayError if `path` is not in a git repository."""
    if not path:
        raise AssayError("code-edits: no repository given (--repo PATH)")
    if not os.path.isdir(path):
        raise AssayError(f"{path}: no such folder")
    proc = subprocess.run(["git", "-C", path, "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssayError(f"{path}: not a git repository")
    return proc.stdout.strip() or path


@dataclass
class Commit:
    sha: str
    parents: list[str]
    date: str
    message: str

    @property
    def subject(self) -> str:
        return self.message.strip().splitlines()[0] if self.message.strip() else ""


def list_commits(repo: str, rev: str, n: int) -> list[Commit]:
    out = git(repo, "log", f"-n{n}", "--format=%H%x00%P%x00%aI%x00%B%x1e", rev, "--")
    commits = []
    for chunk in out.split("\x1e"):
        chunk = chunk.strip("\n")
        if not chunk:
            continue
        sha, parents, date, message = chunk.split("\x00", 3)
        commits.append(Commit(sha, parents.split(), date, message.strip()))
    return commits


# ---- diffs --------------------------------------------------------------------------------------

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def _path(spec: str) -> str | None:
    spec = spec.rstrip("\t\n")
    if spec == "/dev/null":
        return None
    if spec.startswith('"') and spec.endswith('"'):  # git quotes names with special characters
        spec = spec[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape").encode("latin-1").decode(
            "utf-8", "replace")
    return spec[2:] if spec[:2] in ("a/", "b/") else spec


@dataclass
class FileDiff:
    path: str
    old_path: str | None
    new_path: str | None
    binary: bool = False
    hunks: list[dict[str, Any]] = field(default_factory=list)  # header, diff, before, after, added, removed


def parse_diff(text: str) -> list[FileDiff]:
    """A `git show`/`git diff` patch as files and hunks (before = context + removed lines, after =
    context + added lines)."""
    files: list[FileDiff] = []
    cur: FileDiff | None = None
    hunk: dict[str, Any] | None = None
    for line in text.split("\n"):
        if line.startswith("diff --git "):
            m = re.match(r'diff --git (?:"?a/)(.*?)"? (?:"?b/)(.*?)"?$', line)
            path = m.group(2) if m else line.split(" b/")[-1]
            cur, hunk = FileDiff(path, path, path), None
            files.append(cur)
        elif cur is None:
            continue
        elif hunk is None and line.startswith("--- "):
            cur.old_path = _path(line[4:])
        elif hunk is None and line.startswith("+++ "):
            cur.new_path = _path(line[4:])
            cur.path = cur.new_path or cur.old_path or cur.path
        elif hunk is None and line.startswith("new file mode"):
            cur.old_path = None
        elif hunk is None and line.startswith("deleted file mode"):
            cur.new_path = None
        elif hunk is None and (line.startswith("Binary files ") or line == "GIT binary patch"):
            cur.binary = True
        elif line.startswith("@@ "):
            hunk = {"header": line, "diff": [line], "before": [], "after": [], "added": 0, "removed": 0}
            cur.hunks.append(hunk)
        elif hunk is not None and line[:1] in (" ", "-", "+", "\\"):
            hunk["diff"].append(line)
            if line[:1] in (" ", "-"):
                hunk["before"].append(line[1:])
            if line[:1] in (" ", "+"):
                hunk["after"].append(line[1:])
            hunk["removed"] += line[:1] == "-"
            hunk["added"] += line[:1] == "+"
        elif hunk is not None and line == "":  # the patch's last newline (or an empty context line git trimmed)
            continue
    for f in files:
        for h in f.hunks:
            h["diff"] = "\n".join(h["diff"])
            h["before"] = "\n".join(h["before"])
            h["after"] = "\n".join(h["after"])
    return files


def language_of(path: str) -> str | None:
    name = os.path.basename(path).lower()
    if name in ("makefile", "dockerfile"):
        return name
    return LANGUAGES.get(os.path.splitext(name)[1])


def skip_reason_file(f: FileDiff, cfg: CodeEditsConfig) -> str | None:
    parts = f.path.split("/")
    if any(p in cfg.vendored for p in parts[:-1]):
        return "vendored"
    if any(fnmatch.fnmatch(parts[-1], g) or fnmatch.fnmatch(f.path, g) for g in cfg.generated):
        return "generated"
    if f.binary:
        return "binary"
    lang = language_of(f.path)
    if lang is None or (cfg.languages and lang not in cfg.languages):
        return "language"
    if f.old_path is None:
        return "new_file"
    if f.new_path is None:
        return "deleted_file"
    return None


def skip_reason_hunk(h: dict[str, Any], cfg: CodeEditsConfig) -> str | None:
    if h["added"] + h["removed"] > cfg.max_changed_lines or \
            max(h["before"].count("\n"), h["after"].count("\n")) + 1 > cfg.max_hunk_lines:
        return "oversize"
    if "".join(h["before"].split()) == "".join(h["after"].split()):
        return "whitespace_only"
    return None


def mine(repo: str, cfg: CodeEditsConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """(edit seeds, skipped (commit, file, reason), commits walked)."""
    seeds: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    commits = list_commits(repo, cfg.rev, cfg.max_commits)
    for c in commits:
        if len(c.parents) > 1:
            skipped.append({"commit": c.sha, "file": None, "reason": "merge"})
            continue
        patch = git(repo, "show", "--format=", "--no-color", "--no-ext-diff", "--no-textconv",
                    f"-U{cfg.context_lines}", c.sha, "--")
        for fi, f in enumerate(parse_diff(patch)):
            reason = skip_reason_file(f, cfg)
            if reason:
                skipped.append({"commit": c.sha, "file": f.path, "reason": reason})
                continue
            for hi, h in enumerate(f.hunks):
                reason = skip_reason_hunk(h, cfg)
                if reason:
                    skipped.append({"commit": c.sha, "file": f.path, "reason": reason, "hunk": h["header"]})
                    continue
                seeds.append({"key": f"instruction/{c.sha[:12]}/{fi}/{hi}", "commit": c.sha, "date": c.date,
                              "message": c.message, "subject": c.subject, "file": f.path,
                              "language": language_of(f.path), "hunk": h["header"], "diff": h["diff"],
                              "before": h["before"], "after": h["after"], "added": h["added"],
                              "removed": h["removed"]})
    return seeds, skipped, len(commits)


# ---- the LLM step -------------------------------------------------------------------------------

_LABEL = re.compile(r"^\s*(?:\*\*)?(?:edit\s+)?instruction\s*:?\s*(?:\*\*)?\s*:?\s*", re.I)


def parse_instruction(raw: str) -> str:
    """The instruction: the reply (a JSON reply: its first string) less a leading "Instruction:" label
    and wrapping quotes. Raises ParseError when nothing is left."""
    text = _LABEL.sub("", reply_text(raw), count=1).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    if not text:
        raise ParseError("empty instruction")
    return text


class CodeEdits(Generator):
    name = "code-edits"
    Config = CodeEditsConfig

    def check(self) -> None:
        cfg: CodeEditsConfig = self.config
        if cfg.max_commits < 1:
            raise AssayError("code-edits: max_commits must be >= 1")
        if cfg.max_edits is not None and cfg.max_edits < 1:
            raise AssayError("code-edits: max_edits must be >= 1 (or unset)")
        unknown = sorted(set(cfg.languages) - {v for v in LANGUAGES.values() if v} - {"makefile", "dockerfile"})
        if unknown:
            raise AssayError(f"code-edits: unknown language(s) {', '.join(unknown)}")

    def generate(self, run: GenerationRun) -> list[Record]:
        cfg: CodeEditsConfig = self.config
        prompt = load_prompt("code_edits_instruction", cfg.prompts_dir)
        repo = check_repo(cfg.repo)
        seeds, skipped, walked = mine(repo, cfg)
        if not seeds:  # nothing to send: say why rather than commit an empty version
            counts = Counter(s["reason"] for s in skipped)
            why = f" (skipped: {', '.join(f'{k} {v}' for k, v in counts.items())})" if counts else ""
            raise AssayError(f"code-edits: no edits in the last {walked} commit(s) of {cfg.rev} in {repo}{why}")
        for s in skipped:  # hunks and files the miner left out, before any request
            run.drop(**s)
        if cfg.max_edits is not None and len(seeds) > cfg.max_edits:
            for s in seeds[cfg.max_edits:]:
                run.drop("enough", key=s["key"], commit=s["commit"], file=s["file"])
            seeds = seeds[:cfg.max_edits]
        results = run.ask([Request(s["key"], [{"role": "user", "content": render(prompt, s, where=s["key"])}],
                                   parse=parse_instruction) for s in seeds])
        records = []
        for s, res in zip(seeds, results):
            reason = "instruction_failed" if not res.ok else (
                "too_short" if len(res.value.split()) < cfg.min_words else None)
            if reason:
                run.drop(reason, key=s["key"], commit=s["commit"], file=s["file"],
                         instruction=res.value if res.ok else None, error=res.error)
                continue
            records.append(run.record(
                instruction=res.value, input=s["before"], output=s["after"],
                metadata={k: s[k] for k in ("commit", "date", "subject", "message", "file", "language", "hunk",
                                            "diff", "added", "removed")} | {"repo": repo, "instruction_key": s["key"]},
                template="code_edits_instruction"))
        run.params.update(repo=repo, commits=walked, edits=len(seeds))
        run.details.update(repo=repo, commits=walked, edits=len(seeds), skipped=skipped)
        return records
