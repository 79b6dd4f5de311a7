"""`mralign generate`: N candidate answers per question, thinking on and off (paper §3.1.1; method/MRALIGN.md §3).

For each question we sample ``n`` draws (default 3, T = 0.2, top_p = 0.9) in two modes:

* **thinking on**: the model reasons in ``<think>…</think>`` and then answers;
* **thinking off**: an empty think block, so it answers directly.

The mode is switched with the chat template's ``enable_thinking`` flag when the template has one
(Qwen3 style). Otherwise (``thinking_mode="prompt"``, documented fallback): thinking on renders the
plain generation prompt, and thinking off appends the empty block ``<think>\\n\\n</think>\\n\\n`` to it,
which is exactly what Qwen3's template does for ``enable_thinking=False``. Either way the prompt is
the paper's inference prompt (Figure 11, §7.4; paraphrased): reason in ``<think>``, answer in
``<answer>``.

Engines, same output either way: vLLM's offline ``LLM.generate`` (GPU) when importable, else
transformers ``generate`` with left padding (the CPU path). ``--ray`` runs the same work as a Ray
Data job, one model replica per worker.

Output (one line per question): the QA row plus ``prompt`` (chat messages), ``draws``
(``{"thinking_on": [n texts], "thinking_off": [n texts]}``), ``sampling``, ``model``, ``engine``,
``thinking_mode``. Finished questions are appended as each batch completes; a rerun skips ids
already in the output (a resumed run samples afresh for the rest, so it is not bitwise identical).

    mralign generate qa.jsonl -o candidates.jsonl --model Qwen/Qwen3-8B
    mralign generate nq_open --limit 1000 -o nq.candidates.jsonl --model Qwen/Qwen3-8B --ray
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mralign_plugin.pipeline.datasets import load_qa
from mralign_plugin.pipeline.ray_jobs import map_on_actor_pool
from mralign_plugin.pipeline.resumable import ResumableOutput, id_key

# Figure 11 (App. F), paraphrased in our words.
INFERENCE_PROMPT = (
    "Answer the question below. First think it through, then give the final answer. Put your reasoning "
    "inside <think> </think> tags and your final answer inside <answer> </answer> tags. Focus on the "
    "factual accuracy of the final answer: include only claims that are accurate and not controversial.\n\n"
    "Question: {question}"
)
EMPTY_THINK = "<think>\n\n</think>\n\n"
MODES = ("thinking_on", "thinking_off")


@dataclass
class SamplingConfig:
    """Sampling of the candidate draws (paper §3: N = 3, T = 0.2, top_p = 0.9)."""

    n: int = 3
    temperature: float = 0.2
    top_p: float = 0.9
    top_k: int = 0  # 0 = off: the paper's candidate sampling uses T and top_p only (eval uses 20, Table 15)
    max_new_tokens: int = 1536
    seed: int = 0


def messages_for(question: str, prompt_template: str = INFERENCE_PROMPT) -> list[dict]:
    """The chat messages of one question: a single user turn with the inference prompt."""
    return [{"role": "user", "content": prompt_template.format(question=question)}]


def template_supports_thinking_flag(tokenizer) -> bool:
    """Whether the chat template reads ``enable_thinking`` (Qwen3 style)."""
    template = tokenizer.chat_template
    if isinstance(template, dict):
        template = template.get("default", "")
    return "enable_thinking" in (template or "")


def render_prompt(tokenizer, messages: list[dict], thinking: bool, thinking_mode: str) -> str:
    """The text fed to the model for one mode.

    Args:
        tokenizer: a tokenizer with a chat template (without one, the user text is used as is).
        messages: the chat messages.
        thinking: True for thinking on.
        thinking_mode: ``"template"`` (pass ``enable_thinking``) or ``"prompt"`` (prefill the empty
            think block for thinking off).
    """
    if tokenizer.chat_template is None:
        text = messages[-1]["content"] + "\n\n"
    elif thinking_mode == "template":
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=thinking)
    else:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text if thinking else text + EMPTY_THINK


def resolve_thinking_mode(tokenizer, thinking_mode: str) -> str:
    if thinking_mode == "auto":
        return "template" if template_supports_thinking_flag(tokenizer) else "prompt"
    if thinking_mode == "template" and not template_supports_thinking_flag(tokenizer):
        raise ValueError("--thinking-mode template: this chat template has no enable_thinking flag; use prompt or auto")
    if thinking_mode not in ("template", "prompt"):
        raise ValueError(f"thinking_mode must be auto, template or prompt, got {thinking_mode!r}")
    return thinking_mode


class TransformersEngine:
    """CPU/GPU generation with transformers: batched, left-padded, ``num_return_sequences = n``."""

    name = "transformers"

    def __init__(self, model: str, dtype: str = "auto", device: str | None = None, batch_size: int = 8) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype).to(self.device).eval()
        self.batch_size = batch_size

    def generate(self, prompts: list[str], sampling: SamplingConfig) -> list[list[str]]:
        """``n`` completions per prompt, in prompt order."""
        out: list[list[str]] = []
        do_sample = sampling.temperature > 0
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start : start + self.batch_size]
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            with self.torch.no_grad():
                seqs = self.model.generate(
                    **enc,
                    do_sample=do_sample,
                    temperature=sampling.temperature if do_sample else None,
                    top_p=sampling.top_p if do_sample else None,
                    # An explicit 0 also turns off the top-k of the model's generation_config (Qwen3
                    # ships 20), so both engines sample with exactly the configured T, top_p, top_k.
                    top_k=sampling.top_k if do_sample else None,
                    max_new_tokens=sampling.max_new_tokens,
                    num_return_sequences=sampling.n,
                    pad_token_id=self.tokenizer.pad_token_id,
                )  # (len(chunk) * n, prompt_len + new)
            texts = self.tokenizer.batch_decode(seqs[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            out += [texts[i * sampling.n : (i + 1) * sampling.n] for i in range(len(chunk))]
        return out


class VLLMEngine:
    """GPU generation with vLLM's offline ``LLM.generate`` (one call per batch, ``n`` samples each)."""

    name = "vllm"

    def __init__(self, model: str, dtype: str = "auto", tensor_parallel_size: int = 1, seed: int = 0) -> None:
        from vllm import LLM

        self.llm = LLM(model=model, dtype=dtype, tensor_parallel_size=tensor_parallel_size, seed=seed)
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts: list[str], sampling: SamplingConfig) -> list[list[str]]:
        from vllm import SamplingParams

        params = SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                                top_k=sampling.top_k or -1, max_tokens=sampling.max_new_tokens, seed=sampling.seed)
        # Token ids tokenized as the transformers path does (no extra BOS: the chat template has its own).
        inputs = [{"prompt_token_ids": ids} for ids in self.tokenizer(prompts, add_special_tokens=False)["input_ids"]]
        results = self.llm.generate(inputs, params, use_tqdm=False)
        return [[o.text for o in r.outputs] for r in results]


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def make_engine(engine: str, model: str, dtype: str = "auto", batch_size: int = 8, seed: int = 0,
                tensor_parallel_size: int = 1):
    """``"auto"`` picks vLLM when it is importable, else transformers."""
    if engine == "auto":
        engine = "vllm" if vllm_available() else "transformers"
    if engine == "vllm":
        if not vllm_available():
            raise ImportError("--engine vllm: vLLM is not installed: pip install 'mralign_plugin[vllm]' (GPU only)")
        return VLLMEngine(model, dtype=dtype, tensor_parallel_size=tensor_parallel_size, seed=seed)
    if engine == "transformers":
        return TransformersEngine(model, dtype=dtype, batch_size=batch_size)
    raise ValueError(f"unknown engine {engine!r}; choose auto, vllm or transformers")


def generate_rows(engine, rows: list[dict], sampling: SamplingConfig, thinking_mode: str = "auto",
                  model_name: str = "", prompt_template: str = INFERENCE_PROMPT) -> list[dict]:
    """Candidates for ``rows`` (QA dicts): both modes, ``sampling.n`` draws each."""
    mode = resolve_thinking_mode(engine.tokenizer, thinking_mode)
    messages = [messages_for(r["question"], prompt_template) for r in rows]
    draws = {
        key: engine.generate([render_prompt(engine.tokenizer, m, key == "thinking_on", mode) for m in messages], sampling)
        for key in MODES
    }
    return [
        {**row, "prompt": messages[i], "draws": {key: draws[key][i] for key in MODES},
         "sampling": asdict(sampling), "model": model_name, "engine": engine.name, "thinking_mode": mode}
        for i, row in enumerate(rows)
    ]


@dataclass
class GenerateOptions:
    """`mralign generate` options besides the sampling config; the CLI flags map onto these."""

    model: str = ""
    engine: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    thinking_mode: str = "auto"
    tensor_parallel_size: int = 1
    split: str | None = None
    limit: int | None = None
    source_name: str | None = None
    chunk_size: int = 64  # questions per write (and per Ray batch)
    prompt_template: str = INFERENCE_PROMPT  # must contain {question}
    progress: bool = True
    ray: bool = False
    ray_address: str | None = None
    ray_workers: int = 1
    gpus_per_worker: float = 0.0


def generate_file(source: str | Path, output: str | Path, opts: GenerateOptions, sampling: SamplingConfig | None = None) -> dict:
    """Generate candidates for every question of ``source`` not yet in ``output``; return a summary."""
    sampling = sampling or SamplingConfig()
    if "{question}" not in opts.prompt_template:
        raise ValueError("the prompt template must contain {question}")
    rows = load_qa(source, split=opts.split, limit=opts.limit, name=opts.source_name)
    start = time.perf_counter()
    with ResumableOutput(output, id_key, "mralign generate") as out:
        todo = [r for r in rows if r["id"] not in out.done]
        if opts.ray:
            n_written = _generate_ray(todo, opts, sampling, out)
        else:
            n_written = _generate_local(todo, opts, sampling, out)
    seconds = time.perf_counter() - start
    return {"questions": len(rows), "generated": n_written, "skipped_done": len(rows) - len(todo),
            "seconds": round(seconds, 2), "output": str(output)}


def _generate_local(todo: list[dict], opts: GenerateOptions, sampling: SamplingConfig, out: ResumableOutput) -> int:
    if not todo:
        return 0
    import torch

    torch.manual_seed(sampling.seed)
    engine = make_engine(opts.engine, opts.model, opts.dtype, opts.batch_size, sampling.seed, opts.tensor_parallel_size)
    progress = None
    if opts.progress:
        from tqdm import tqdm

        progress = tqdm(total=len(todo), unit="q", desc=f"generate ({engine.name})", dynamic_ncols=True)
    n = 0
    for start in range(0, len(todo), opts.chunk_size):
        chunk = todo[start : start + opts.chunk_size]
        for row in generate_rows(engine, chunk, sampling, opts.thinking_mode, opts.model, opts.prompt_template):
            out.write(row)
            n += 1
        if progress is not None:
            progress.update(min(opts.chunk_size, len(todo) - start))
    if progress is not None:
        progress.close()
    return n


class _RayGenerator:
    """Ray Data batch UDF: one model replica per worker, built once in ``__init__``."""

    def __init__(self, opts_json: str, sampling_json: str) -> None:
        self.opts = GenerateOptions(**json.loads(opts_json))
        self.sampling = SamplingConfig(**json.loads(sampling_json))
        self.engine = make_engine(self.opts.engine, self.opts.model, self.opts.dtype, self.opts.batch_size,
                                  self.sampling.seed, self.opts.tensor_parallel_size)

    def __call__(self, batch: dict) -> dict:
        rows = [json.loads(s) for s in batch["item"]]
        out = generate_rows(self.engine, rows, self.sampling, self.opts.thinking_mode, self.opts.model,
                            self.opts.prompt_template)
        return {"result": [json.dumps(r, ensure_ascii=False) for r in out]}


def _generate_ray(todo: list[dict], opts: GenerateOptions, sampling: SamplingConfig, out: ResumableOutput) -> int:
    worker_opts = {**asdict(opts), "ray": False, "progress": False}
    udf_kwargs = {"opts_json": json.dumps(worker_opts), "sampling_json": json.dumps(asdict(sampling))}
    n = 0
    for result in map_on_actor_pool([json.dumps(r, ensure_ascii=False) for r in todo], _RayGenerator, udf_kwargs,
                                    address=opts.ray_address, workers=opts.ray_workers, batch_size=opts.chunk_size,
                                    num_gpus=opts.gpus_per_worker, progress=opts.progress):
        out.write(result)
        n += 1
    return n
