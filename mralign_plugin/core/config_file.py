"""Reading the small YAML / JSON files users hand us: a taxonomy, a reward config."""

from __future__ import annotations

import json
from pathlib import Path


def read_yaml_or_json(path: str | Path) -> object:
    """Parse ``path`` as YAML (``.yaml``/``.yml``, ``safe_load``) or else as JSON."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(text)
    return json.loads(text)
