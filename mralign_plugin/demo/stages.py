"""Stages of the main job, each cached by its inputs, so a rerun after an interruption resumes.

A stage's fingerprint is the SHA-256 of its settings (JSON) and of the contents of its input files.
``RUN/stages.json`` records, per stage, the fingerprint it was started with, the one it finished
with, its wall time and its result summary:

* finished with the same fingerprint and every output present: skipped, its record reused;
* started with the same fingerprint but not finished (interrupted): run again on its partial
  outputs, which the resumable stages (generate, eval predictions) continue without duplicates;
* anything else (new settings, changed inputs): its outputs are deleted and it runs afresh.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

STAGES_FILE = "stages.json"


def fingerprint(settings: dict, inputs: Iterable[str | Path] = ()) -> str:
    """SHA-256 of ``settings`` (canonical JSON), of each input file's bytes, and of each input folder's
    listing (name, size, modification time: a model folder is too big to read at every stage)."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in map(Path, inputs):
        h.update(str(path).encode())
        if path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.is_file()):
                st = f.stat()
                h.update(f"{f.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}".encode())
        else:
            with open(path, "rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


class Stages:
    """The cache of one run directory (``RUN/stages.json``)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / STAGES_FILE
        self.records: dict[str, dict] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.records, indent=1) + "\n", encoding="utf-8")
        tmp.replace(self.path)

    def run(self, name: str, settings: dict, inputs: Iterable[str | Path], outputs: Iterable[str | Path],
            fn: Callable[[], dict]) -> dict:
        """Run ``fn`` (returning a JSON-able summary) unless its cached result is still valid.

        Returns:
            ``{"result": ..., "seconds": wall time of the run that made it, "cached": bool}``.
        """
        outputs = [Path(p) for p in outputs]
        fp = fingerprint(settings, inputs)
        record = self.records.get(name, {})
        if record.get("finished") == fp and all(p.exists() for p in outputs):
            return {**record, "cached": True}
        if record.get("started") != fp:
            for path in outputs:
                _remove(path)
        self.records[name] = {"started": fp}
        self._save()
        start = time.perf_counter()
        result = fn()
        self.records[name] = {"started": fp, "finished": fp, "seconds": round(time.perf_counter() - start, 1),
                              "result": result}
        self._save()
        return {**self.records[name], "cached": False}
