"""Resumable file jobs: the one mechanism every stage uses to append its output and resume after a kill.

A stage (generate, annotate, eval's predictions, the TruthfulQA judge) reads its inputs, skips those
whose key is already in its output, and appends each finished record at once. Opening a
:class:`ResumableOutput` does the rest in one place:

1. takes an exclusive advisory lock on the output, so two runs appending to one file fail at once
   instead of duplicating records;
2. cuts a partial last line left by a kill (SIGKILL included), in the output and its rejected file;
3. reads the keys already written: ``done`` from the output, ``failed`` from ``OUTPUT.rejected.jsonl``
   (stages that record rejections), so a rerun neither repeats nor loses work.

Each record is then one line-buffered write: a kill loses at most the records in flight.

    with ResumableOutput(path, key=lambda r: str(r["id"]), verb="mralign generate") as out:
        for row in (r for r in rows if r["id"] not in out.done):
            out.write(make(row))
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from mralign_plugin.core.formats import iter_jsonl

KeyOf = Callable[[dict], "str | None"]  # a written record's key, or None for a line that marks nothing done


def rejected_path(output: str | Path) -> Path:
    """``OUTPUT.rejected.jsonl`` beside the output (``out.jsonl`` -> ``out.rejected.jsonl``)."""
    output = Path(output)
    stem = output.name[: -len(".jsonl")] if output.name.endswith(".jsonl") else output.name
    return output.with_name(stem + ".rejected.jsonl")


def record_key(record_id: object, text: str) -> str:
    """A resume key that changes with the content: id + the first 16 hex digits of ``text``'s SHA-256."""
    return f"{record_id}|{hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]}"


def id_key(record: dict) -> str | None:
    """The key of stages that resume by question id (generate, eval predictions)."""
    return str(record["id"]) if "id" in record else None


def truncate_partial_line(path: Path, chunk: int = 1 << 16) -> None:
    """Cut whatever follows the last newline (a record half-written when the run was killed)."""
    if not path.exists():
        return
    with open(path, "rb+") as f:
        end = f.seek(0, os.SEEK_END)
        pos = end
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            newline = f.read(pos - start).rfind(b"\n")
            if newline >= 0:
                pos = start + newline + 1
                break
            pos = start
        if pos < end:
            f.truncate(pos)


def read_keyed(path: Path, key: KeyOf) -> Iterator[tuple[str, dict]]:
    """``(key, record)`` for each record of ``path`` that has a key (none when the file is absent)."""
    if not path.exists():
        return
    for _, record in iter_jsonl(path):
        if isinstance(record, dict):
            k = key(record)
            if k is not None:
                yield k, record


def _lock(path: Path, verb: str):
    """An exclusive advisory lock on ``path`` for this run (released on close, even after SIGKILL)."""
    handle = open(path, "a", encoding="utf-8")
    try:
        import fcntl

        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # no fcntl (Windows): run unlocked
        pass
    except OSError:
        handle.close()
        raise ValueError(f"{path} is being written by another `{verb}` run; wait for it or stop it") from None
    return handle


def _rejection_key(record: dict) -> str | None:
    return record.get("key")


class ResumableOutput:
    """An append-only jsonl output (and optional rejected file) that a killed run resumes.

    Args:
        path: the output jsonl, created with its folder if absent.
        key: a written record's key (:func:`id_key`, or a content key from :func:`record_key`).
        verb: the command writing it, for the message when another run holds the lock.
        rejected: also keep ``OUTPUT.rejected.jsonl``, one ``{"key", ..., "reason"}`` line per input
            that failed; its keys are ``failed`` and are skipped too, unless ``retry_rejected``.
        retry_rejected: empty the rejected file at open, so its records are tried again.

    Attributes:
        done: keys already in the output. failed: keys already in the rejected file.
    """

    def __init__(self, path: str | Path, key: KeyOf, verb: str, rejected: bool = False,
                 retry_rejected: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rejected_path = rejected_path(self.path) if rejected else None
        self._lock = _lock(self.path, verb)
        try:
            truncate_partial_line(self.path)
            self.done = {k for k, _ in read_keyed(self.path, key)}
            self.failed: set[str] = set()
            if self.rejected_path is not None:
                truncate_partial_line(self.rejected_path)
                if retry_rejected:
                    self.rejected_path.write_text("", encoding="utf-8")
                self.failed = {k for k, _ in read_keyed(self.rejected_path, _rejection_key)}
            self._out = open(self.path, "a", encoding="utf-8", buffering=1)  # line-buffered: one flush per record
            self._rej = open(self.rejected_path, "a", encoding="utf-8", buffering=1) if rejected else None
        except BaseException:
            self._lock.close()
            raise

    def write(self, record: dict | str) -> None:
        """Append one finished record (a dict, or its JSON text already encoded) as one line."""
        line = record if isinstance(record, str) else json.dumps(record, ensure_ascii=False)
        self._out.write(line + "\n")

    def reject(self, rejection: dict) -> None:
        """Append one rejection (``{"key", ..., "reason"}``) to the rejected file."""
        if self._rej is None:
            raise ValueError(f"{self.path}: opened without a rejected file")
        self._rej.write(json.dumps(rejection, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self._out.close()
        if self._rej is not None:
            self._rej.close()
        self._lock.close()

    def __enter__(self) -> ResumableOutput:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
