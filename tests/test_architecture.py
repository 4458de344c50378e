"""The shape of the code base, checked: imports run one way between the layers, no private name
crosses a package, every package is in the wheel, and no source file grows past 500 lines.

Imports are read with `ast` from every module, function-local ones included, so a dependency cannot
hide inside a function."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# core <- pipelines, auditors <- trainer <- app: a module may import its own package or a lower layer
LAYERS = {"core": 0, "pipelines": 1, "auditors": 1, "trainer": 2, "app": 3}
NOT_SOURCE = {".venv", ".git", "tests", "bench", "scripts", "build", "docs", "test-artifacts", ".assay", ".device"}
MAX_LINES = 500


def source_files(root: Path = ROOT) -> list[Path]:
    return sorted(p for p in root.rglob("*.py")
                  if not NOT_SOURCE & set(p.relative_to(root).parts) and "__pycache__" not in p.parts)


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["assay", *parts])


def imports(path: Path, root: Path = ROOT) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module, imported names) for every import of an `assay` module in `path`."""
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names if a.name.split(".")[0] == "assay"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "assay":
                out.append((node.lineno, target, [a.name for a in node.names]))
    return out


def layer_of(module: str) -> tuple[str, int]:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "core"  # `assay` itself (its __version__) is the bottom
    assert top in LAYERS, f"{module}: a package outside the layers {sorted(LAYERS)}"
    return top, LAYERS[top]


def layer_problems(root: Path = ROOT) -> list[str]:
    problems = []
    for path in source_files(root):
        here, level = layer_of(module_name(path, root))
        for line, target, names in imports(path, root):
            # `from assay.core import jobs` names a module: the layer is the module's, not the name's
            there, their_level = layer_of(target)
            where = f"{path.relative_to(root)}:{line}"
            if there != here and their_level >= level:
                problems.append(f"{where}: {here} (layer {level}) imports {target} (layer {their_level})")
            if there != here:
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                private += [p for p in target.split(".") if p.startswith("_") and not p.startswith("__")]
                if private:
                    problems.append(f"{where}: takes private {', '.join(private)} from {target}")
    return problems


def test_imports_run_one_way_and_no_private_name_crosses_a_package():
    problems = layer_problems()
    assert not problems, "imports against the layers:\n" + "\n".join(problems)


def test_the_checker_finds_an_upward_import_a_sibling_import_and_a_private_name(tmp_path):
    # the check above passes on a checker that finds nothing: show it fails on modules that break the rules
    (tmp_path / "core").mkdir()
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "core" / "probe.py").write_text(
        "def f():\n    from assay.app.cli import main\n    from assay.auditors.base import _hidden\n")
    (tmp_path / "pipelines" / "probe.py").write_text("from ..auditors import runner\nfrom ..core.store import Store\n")
    problems = layer_problems(tmp_path)
    assert problems == ["core/probe.py:2: core (layer 0) imports assay.app.cli (layer 3)",
                        "core/probe.py:3: core (layer 0) imports assay.auditors.base (layer 1)",
                        "core/probe.py:3: takes private _hidden from assay.auditors.base",
                        "pipelines/probe.py:1: pipelines (layer 1) imports assay.auditors (layer 1)"]


def test_every_package_folder_is_in_the_wheel():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    folders = {module_name(p) for p in source_files() if p.name == "__init__.py"}
    assert folders - listed == set(), (f"packages missing from pyproject's [tool.setuptools] packages: "
                                       f"{folders - listed}")
    assert listed - folders == set(), f"pyproject lists packages that do not exist: {listed - folders}"


def test_no_source_file_is_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in source_files() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these by responsibility (over {MAX_LINES} lines): {long}"
