"""`mralign eval` end to end on CPU: a tiny random Llama generates for the 10-item NQ-Open fixture in both
thinking modes through pipeline/generate.py (transformers engine), then scoring and the report files."""

import json
from pathlib import Path

import pytest

from mralign_plugin.cli import main

DATA = Path(__file__).resolve().parents[1] / "data" / "eval"
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from mralign_plugin.tiny_model import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny"))


def _eval(model, out, *extra):
    return main(["eval", "--model", str(model), "--dataset", f"nq_open={DATA / 'nq_open.jsonl'}", "--thinking", "both",
                 "--max-new-tokens", "24", "--engine", "transformers", "--dtype", "float32", "--batch-size", "5",
                 "--n-resamples", "100", "--no-progress", "-o", str(out), *extra])


def test_eval_with_a_tiny_model_writes_the_report(tiny, tmp_path):
    out = tmp_path / "run"
    assert _eval(tiny, out, "--name", "tiny") == 0
    for mode in ("thinking_on", "thinking_off"):
        preds = [json.loads(line) for line in (out / "predictions" / f"nq_open.{mode}.jsonl").read_text().splitlines()]
        assert len(preds) == 10 and {p["mode"] for p in preds} == {mode}
        assert preds[0]["sampling"]["temperature"] == 0.6 and preds[0]["sampling"]["top_p"] == 0.95
        assert preds[0]["engine"] == "transformers" and preds[0]["thinking_mode"] == "template"
        assert "<think>" in preds[0]["prompt"][0]["content"]  # the paper's inference prompt (Figure 11)
        assert len((out / "scored" / f"nq_open.{mode}.jsonl").read_text().splitlines()) == 10
    report = json.loads((out / "report.json").read_text())
    assert [r["method"] for r in report["rows"]] == ["tiny w/o Thinking", "tiny w Thinking"]
    on = report["rows"][1]["results"]["nq_open"]
    assert on["n"] == 10 and 0.0 <= on["acc"] <= 100.0 and on["mis"] is not None
    assert (out / "report.md").read_text().startswith("# MR-ALIGN evaluation report")
    assert (out / "plots" / "scores.png").stat().st_size > 10_000
    assert json.loads((out / "config.json").read_text())["max_new_tokens"] == 24

    # A rerun generates nothing new (resume by id) and reproduces the same numbers.
    before = (out / "predictions" / "nq_open.thinking_on.jsonl").read_text()
    assert _eval(tiny, out, "--name", "tiny") == 0
    assert (out / "predictions" / "nq_open.thinking_on.jsonl").read_text() == before
    assert json.loads((out / "report.json").read_text())["rows"] == report["rows"]


def test_eval_of_a_lora_adapter_merges_it_once(tiny, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    model.save_pretrained(adapter)
    out = tmp_path / "run"
    assert _eval(adapter, out, "--limit", "2", "--thinking", "on") == 0
    assert (out / "merged_model" / "config.json").exists() and (out / "merged_model" / "tokenizer_config.json").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["rows"][0]["method"] == "adapter" and report["rows"][0]["results"]["nq_open"]["n"] == 2
