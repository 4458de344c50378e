"""Type checkers resolve `assay.*` although the repository root is the package (pyproject's
package-dir): through build/typing/assay, which scripts/setup.sh links to the root, and the
mypy_path / extraPaths settings in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_typing_link_points_at_the_repository_root():
    link = ROOT / "build" / "typing" / "assay"
    assert link.is_symlink() and link.resolve() == ROOT, f"{link} should link to {ROOT} (run scripts/setup.sh)"


def test_mypy_resolves_assay_modules_with_the_project_settings():
    probe = "from assay.core.store import Store\nfrom assay.auditors.runner import run_audit\nreveal_type(Store)\n"
    proc = subprocess.run([sys.executable, "-m", "mypy", "--follow-imports=silent", "--no-incremental", "-c", probe],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    # an unresolved module would read 'Cannot find implementation or library stub' and type Store as Any
    assert "Cannot find implementation" not in proc.stdout, proc.stdout
    assert '"def (root: ' in proc.stdout and "-> assay.core.store.Store" in proc.stdout, proc.stdout
