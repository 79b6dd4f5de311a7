"""The adapter names the OpenRLHF version it was written for."""

import importlib.metadata

import pytest

from mralign_plugin.adapters.openrlhf import check_openrlhf_version

check = check_openrlhf_version.__wrapped__  # uncached


def test_written_for_version_is_quiet(monkeypatch, recwarn):
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.11.2")
    assert check() == "0.11.2"
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_other_version_warns_clearly(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.12.0")
    with pytest.warns(RuntimeWarning, match=r"written for OpenRLHF 0\.11\.x .* found 0\.12\.0"):
        assert check() == "0.12.0"


def test_missing_openrlhf_says_how_to_install(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    with pytest.raises(ImportError, match="pip install --no-deps openrlhf==0.11.2"):
        check()
