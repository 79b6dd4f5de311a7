"""Resumable file jobs (pipeline/resumable.py): partial lines, done and failed keys, the lock, the rejected file."""

import json

import pytest

from mralign_plugin.pipeline.resumable import ResumableOutput, id_key, record_key, rejected_path, truncate_partial_line


def test_truncate_partial_line(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": 2}\n{"c": ')
    truncate_partial_line(path, chunk=4)  # small chunks: the scan crosses chunk borders
    assert path.read_bytes() == b'{"a": 1}\n{"b": 2}\n'
    path.write_bytes(b'{"partial only')
    truncate_partial_line(path)
    assert path.read_bytes() == b""


def test_reopen_repairs_the_last_line_and_knows_what_is_done(tmp_path):
    path = tmp_path / "sub" / "out.jsonl"
    with ResumableOutput(path, id_key, "mralign test") as out:
        assert out.done == set() and path.parent.is_dir()
        out.write({"id": 1, "x": "é"})
        out.write('{"id": "2"}')  # a line already encoded is written as is
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"id": 3, "x": ')  # a kill in the middle of a record
    with ResumableOutput(path, id_key, "mralign test") as out:
        assert out.done == {"1", "2"}
        out.write({"id": 3})
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(x)["id"] for x in lines] == [1, "2", 3]
    assert "é" in lines[0]  # not escaped


def test_rejected_file_holds_failed_keys_until_retried(tmp_path):
    path = tmp_path / "out.jsonl"
    with ResumableOutput(path, id_key, "mralign test", rejected=True) as out:
        out.reject({"key": "a|1", "reason": "bad"})
        assert out.rejected_path == rejected_path(path) == tmp_path / "out.rejected.jsonl"
    with ResumableOutput(path, id_key, "mralign test", rejected=True) as out:
        assert out.failed == {"a|1"}
    with ResumableOutput(path, id_key, "mralign test", rejected=True, retry_rejected=True) as out:
        assert out.failed == set()
    assert rejected_path(path).read_text() == ""
    with ResumableOutput(path, id_key, "mralign test") as out, pytest.raises(ValueError, match="without a rejected"):
        out.reject({"key": "b"})


def test_a_second_writer_is_refused_and_the_lock_is_released(tmp_path):
    path = tmp_path / "out.jsonl"
    first = ResumableOutput(path, id_key, "mralign generate")
    with pytest.raises(ValueError, match="being written by another `mralign generate` run"):
        ResumableOutput(path, id_key, "mralign generate")
    first.close()
    ResumableOutput(path, id_key, "mralign generate").close()  # free again


def test_record_key_changes_with_the_content():
    assert record_key("q1", "a") == record_key("q1", "a") != record_key("q1", "b")
    assert record_key("q1", "a").startswith("q1|") and len(record_key("q1", "a")) == len("q1|") + 16
