"""`--ray`: annotation and generation as Ray Data jobs on a local Ray instance give the local runs' output."""

import json

import pytest
from fake_chat_server import FakeChatServer

from mralign_plugin.annotate.annotators import Endpoint
from mralign_plugin.pipeline.annotate import AnnotateOptions, annotate_file
from mralign_plugin.pipeline.generate import GenerateOptions, SamplingConfig, generate_file

pytestmark = pytest.mark.integration
ray = pytest.importorskip("ray", reason="the ray extra is not installed")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def canonical(path):
    return sorted(json.dumps(json.loads(line), sort_keys=True) for line in open(path, encoding="utf-8"))


def trajectories(path, n=30):
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            paragraphs = ["Okay, so the question asks for a capital.", f"I remember fact {i}.", "Wait, let me check."]
            f.write(json.dumps({"id": i, "prompt": f"q{i}" + (" [mock:500]" if i == 7 else ""), "label": True,
                                "response": "<think>" + "\n\n".join(paragraphs[: 1 + i % 3]) + "</think>A"}) + "\n")
        f.write("{broken\n")
    return path


@pytest.mark.parametrize("annotator", ["rules", "llm"])
def test_ray_annotate_equals_local(tmp_path, annotator):
    src = trajectories(tmp_path / "in.jsonl")
    with FakeChatServer() as srv:
        kwargs = {} if annotator == "rules" else {"annotator": "llm", "endpoints": [Endpoint(srv.base_url, "m")],
                                                  "max_retries": 1, "backoff": 0.01}
        local = annotate_file(src, tmp_path / "local.jsonl", AnnotateOptions(progress=False, **kwargs))
        on_ray = annotate_file(src, tmp_path / "ray.jsonl",
                               AnnotateOptions(progress=False, ray=True, ray_workers=2, ray_batch_size=8, **kwargs))
    for key in ("in", "annotated", "rejected", "rejected_by_stage"):
        assert local[key] == on_ray[key]
    assert canonical(tmp_path / "ray.jsonl") == canonical(tmp_path / "local.jsonl")
    assert canonical(tmp_path / "ray.rejected.jsonl") == canonical(tmp_path / "local.rejected.jsonl")
    # resume on Ray: nothing left to do
    again = annotate_file(src, tmp_path / "ray.jsonl", AnnotateOptions(progress=False, ray=True, **kwargs))
    assert again["skipped_done"] == again["in"]


def test_ray_generate_equals_local_greedy(tmp_path):
    from mralign_plugin.tiny_model import build_tiny_llama

    model = str(build_tiny_llama(tmp_path / "tiny"))
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": f"Capital {i}?", "answers": ["X"]}) + "\n" for i in range(6)),
                  encoding="utf-8")
    greedy = SamplingConfig(n=1, temperature=0.0, max_new_tokens=6)
    base = {"model": model, "engine": "transformers", "dtype": "float32", "progress": False, "chunk_size": 3}
    generate_file(qa, tmp_path / "local.jsonl", GenerateOptions(**base), greedy)
    s = generate_file(qa, tmp_path / "ray.jsonl", GenerateOptions(**base, ray=True, ray_workers=1), greedy)
    assert s["generated"] == 6
    assert canonical(tmp_path / "ray.jsonl") == canonical(tmp_path / "local.jsonl")
