"""Small pieces the benchmark scripts share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json(path: str | None, figures: Any) -> None:
    """`--json-out PATH`: write the figures there (folders made as needed); nothing when PATH is None."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(figures, indent=2, default=str) + "\n")
        print(f"figures written to {path}")
