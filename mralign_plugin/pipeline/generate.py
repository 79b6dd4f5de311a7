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

Small models that were never trained to think (e.g. SmolLM2) get two options, usable with any model:

* ``few_shot``: worked examples (question, thinking paragraphs, answer) as earlier chat turns;
* ``two_phase``: phase 1 prefills ``<think>\\n`` and stops at ``</think>`` or the token budget
  (``max_new_tokens``); phase 2 prefills ``</think>\\n<answer>`` after the thinking and stops at
  ``</answer>`` (``answer_max_tokens``). Thinking off prefills the empty block and goes to phase 2.
  The response is always ``<think>\\n…\\n</think>\\n<answer>…</answer>``, so a trace that ran out of
  budget is closed, not dropped.

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
import os
import time
from dataclasses import asdict, dataclass, replace
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
THINK_OPEN, ANSWER_OPEN, ANSWER_CLOSE = "<think>\n", "</think>\n<answer>", "</answer>"


@dataclass
class SamplingConfig:
    """Sampling of the candidate draws (paper §3: N = 3, T = 0.2, top_p = 0.9)."""

    n: int = 3
    temperature: float = 0.2
    top_p: float = 0.9
    top_k: int = 0  # 0 = off: the paper's candidate sampling uses T and top_p only (eval uses 20, Table 15)
    max_new_tokens: int = 1536
    seed: int = 0


def load_few_shot(path: str | Path) -> list[dict]:
    """Worked examples from a JSON file ``{"examples": [{"question", "thinking": [paragraphs], "answer"}]}``.

    Raises:
        ValueError: naming the example and the field that is missing or not a (list of) string(s).
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    examples = data.get("examples") if isinstance(data, dict) else None
    if not isinstance(examples, list) or not examples:
        raise ValueError(f"{path}: expected an object with a non-empty list `examples`")
    for i, ex in enumerate(examples):
        for key in ("question", "answer"):
            if not isinstance(ex.get(key), str) or not ex[key].strip():
                raise ValueError(f"{path}: examples[{i}].{key} must be a non-empty string")
        if not isinstance(ex.get("thinking"), list) or not ex["thinking"] or not all(isinstance(t, str) for t in ex["thinking"]):
            raise ValueError(f"{path}: examples[{i}].thinking must be a non-empty list of paragraph strings")
    return examples


def worked_response(thinking: list[str], answer: str) -> str:
    """An assistant turn in the response format: paragraphs in ``<think>``, then ``<answer>``."""
    return THINK_OPEN + "\n\n".join(thinking) + "\n" + ANSWER_OPEN + answer + ANSWER_CLOSE


def messages_for(question: str, prompt_template: str = INFERENCE_PROMPT, few_shot: list[dict] | None = None) -> list[dict]:
    """The chat messages of one question: the worked examples as earlier turns, then the question.

    Example:
        >>> [m["role"] for m in messages_for("Q?", few_shot=[{"question": "E?", "thinking": ["t"], "answer": "a"}])]
        ['user', 'assistant', 'user']
    """
    turns = []
    for ex in few_shot or ():
        turns += [{"role": "user", "content": prompt_template.format(question=ex["question"])},
                  {"role": "assistant", "content": worked_response(ex["thinking"], ex["answer"])}]
    return turns + [{"role": "user", "content": prompt_template.format(question=question)}]


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
    """CPU/GPU generation with transformers: batched, left-padded, ``num_return_sequences = n``.

    Prompts that share a long token prefix (few-shot turns) are prefilled once: the prefix's KV cache
    is computed for one row and repeated over the batch, and each row's own suffix is left-padded
    after it (``[prefix | pad | suffix]``, the pads masked out), so the batch never re-reads the
    examples. The outputs are those of plain batched generation up to floating-point rounding.
    """

    name = "transformers"
    MIN_SHARED_PREFIX = 32  # tokens; shorter shared prefixes are not worth a separate pass

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
        self._prefix: tuple[tuple[int, ...], object] | None = None  # (ids, KV cache of one row)

    def _prefix_cache(self, prefix: list[int]):
        """The KV cache of ``prefix`` for one row (kept for the next call with the same prefix)."""
        if self._prefix is None or self._prefix[0] != tuple(prefix):
            ids = self.torch.tensor([prefix], device=self.device)
            with self.torch.no_grad():
                cache = self.model(input_ids=ids, use_cache=True).past_key_values
            self._prefix = (tuple(prefix), cache)
        return self._prefix[1]

    def _encode(self, chunk: list[str], n: int):
        """Model inputs for ``chunk`` with each prompt repeated ``n`` times, sharing a prefix cache if any."""
        import copy

        ids = self.tokenizer(chunk, add_special_tokens=False)["input_ids"]
        shared = len(os.path.commonprefix(ids)) if len(ids) > 1 else 0
        shared = min(shared, min(len(x) for x in ids) - 1)  # every row keeps >= 1 token of its own
        pad = self.tokenizer.pad_token_id
        if shared < self.MIN_SHARED_PREFIX:
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            return {**enc, "num_return_sequences": n}
        width = max(len(x) for x in ids) - shared
        rows, mask = [], []
        for x in ids:
            suffix = x[shared:]
            rows += [x[:shared] + [pad] * (width - len(suffix)) + suffix] * n
            mask += [[1] * shared + [0] * (width - len(suffix)) + [1] * len(suffix)] * n
        cache = copy.deepcopy(self._prefix_cache(ids[0][:shared]))
        cache.batch_repeat_interleave(len(rows))
        return {"input_ids": self.torch.tensor(rows, device=self.device),
                "attention_mask": self.torch.tensor(mask, device=self.device), "past_key_values": cache,
                "num_return_sequences": 1}

    def generate(self, prompts: list[str], sampling: SamplingConfig, stop: str | None = None) -> list[list[str]]:
        """``n`` completions per prompt, in prompt order; each ends before ``stop`` when given."""
        out: list[list[str]] = []
        do_sample = sampling.temperature > 0
        stopping = {"stop_strings": [stop], "tokenizer": self.tokenizer} if stop else {}
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start : start + self.batch_size]
            inputs = self._encode(chunk, sampling.n)
            with self.torch.no_grad():
                seqs = self.model.generate(
                    **inputs,
                    do_sample=do_sample,
                    temperature=sampling.temperature if do_sample else None,
                    top_p=sampling.top_p if do_sample else None,
                    # An explicit 0 also turns off the top-k of the model's generation_config (Qwen3
                    # ships 20), so both engines sample with exactly the configured T, top_p, top_k.
                    top_k=sampling.top_k if do_sample else None,
                    max_new_tokens=sampling.max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id,
                    **stopping,
                )  # (len(chunk) * n, prompt_len + new)
            texts = self.tokenizer.batch_decode(seqs[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            texts = [cut_at(t, stop) for t in texts]
            out += [texts[i * sampling.n : (i + 1) * sampling.n] for i in range(len(chunk))]
        return out


class VLLMEngine:
    """GPU generation with vLLM's offline ``LLM.generate`` (one call per batch, ``n`` samples each)."""

    name = "vllm"

    def __init__(self, model: str, dtype: str = "auto", tensor_parallel_size: int = 1, seed: int = 0) -> None:
        from vllm import LLM

        self.llm = LLM(model=model, dtype=dtype, tensor_parallel_size=tensor_parallel_size, seed=seed)
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts: list[str], sampling: SamplingConfig, stop: str | None = None) -> list[list[str]]:
        from vllm import SamplingParams

        params = SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                                top_k=sampling.top_k or -1, max_tokens=sampling.max_new_tokens, seed=sampling.seed,
                                stop=[stop] if stop else None)
        # Token ids tokenized as the transformers path does (no extra BOS: the chat template has its own).
        inputs = [{"prompt_token_ids": ids} for ids in self.tokenizer(prompts, add_special_tokens=False)["input_ids"]]
        results = self.llm.generate(inputs, params, use_tqdm=False)
        return [[o.text for o in r.outputs] for r in results]


def cut_at(text: str, stop: str | None) -> str:
    """``text`` up to the first ``stop`` (transformers keeps the stop string, vLLM drops it)."""
    return text.split(stop, 1)[0] if stop else text


def complete(engine, messages: list[list[dict]], sampling: SamplingConfig, thinking: bool, thinking_mode: str,
             two_phase: bool = False, answer_max_tokens: int = 64) -> list[list[str]]:
    """``sampling.n`` responses per chat, in order: one pass, or the two phases of the module docstring.

    Args:
        engine: a generation engine (``generate(prompts, sampling, stop)``).
        messages: one chat (list of messages) per question.
        thinking: thinking on or off.
        thinking_mode: resolved ``"template"`` or ``"prompt"`` (see :func:`render_prompt`).
    """
    if not two_phase:
        return engine.generate([render_prompt(engine.tokenizer, m, thinking, thinking_mode) for m in messages], sampling)
    prompts = [render_prompt(engine.tokenizer, m, True, thinking_mode) for m in messages]  # the bare generation prompt
    n = sampling.n
    if thinking:
        thoughts = engine.generate([p + THINK_OPEN for p in prompts], sampling, stop="</think>")  # [[n texts]]
        heads = [THINK_OPEN + t.strip() + "\n" + ANSWER_OPEN for ts in thoughts for t in ts]  # (Q * n,)
    else:
        heads = [THINK_OPEN + "\n" + ANSWER_OPEN] * (len(prompts) * n)
    bodies = [prompts[i // n] + head for i, head in enumerate(heads)]
    answers = engine.generate(bodies, replace(sampling, n=1, max_new_tokens=answer_max_tokens), stop=ANSWER_CLOSE)
    responses = [head + a[0].strip() + ANSWER_CLOSE for head, a in zip(heads, answers, strict=True)]
    return [responses[i * n : (i + 1) * n] for i in range(len(prompts))]


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
                  model_name: str = "", prompt_template: str = INFERENCE_PROMPT, few_shot: list[dict] | None = None,
                  two_phase: bool = False, answer_max_tokens: int = 64) -> list[dict]:
    """Candidates for ``rows`` (QA dicts): both modes, ``sampling.n`` draws each."""
    mode = resolve_thinking_mode(engine.tokenizer, thinking_mode)
    messages = [messages_for(r["question"], prompt_template, few_shot) for r in rows]
    draws = {key: complete(engine, messages, sampling, key == "thinking_on", mode, two_phase, answer_max_tokens)
             for key in MODES}
    return [
        {**row, "prompt": messages[i], "draws": {key: draws[key][i] for key in MODES},
         "sampling": asdict(sampling), "model": model_name, "engine": engine.name, "thinking_mode": mode,
         "two_phase": two_phase}
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
    few_shot: str | None = None  # a JSON file of worked examples (load_few_shot), given as earlier chat turns
    two_phase: bool = False
    answer_max_tokens: int = 64  # phase 2's budget
    progress: bool = True
    ray: bool = False
    ray_address: str | None = None
    ray_workers: int = 1
    gpus_per_worker: float = 0.0


def generate_with(engine, rows: list[dict], opts: GenerateOptions, sampling: SamplingConfig,
                  few_shot: list[dict] | None) -> list[dict]:
    """:func:`generate_rows` with the prompt options of ``opts`` (``few_shot`` already loaded)."""
    return generate_rows(engine, rows, sampling, opts.thinking_mode, opts.model, opts.prompt_template, few_shot,
                         opts.two_phase, opts.answer_max_tokens)


def generate_file(source: str | Path, output: str | Path, opts: GenerateOptions, sampling: SamplingConfig | None = None) -> dict:
    """Generate candidates for every question of ``source`` not yet in ``output``; return a summary."""
    sampling = sampling or SamplingConfig()
    if "{question}" not in opts.prompt_template:
        raise ValueError("the prompt template must contain {question}")
    # Loaded here, so a broken examples file stops the run before any model loads (Ray workers reload it).
    few_shot = load_few_shot(opts.few_shot) if opts.few_shot else None
    rows = load_qa(source, split=opts.split, limit=opts.limit, name=opts.source_name)
    start = time.perf_counter()
    with ResumableOutput(output, id_key, "mralign generate") as out:
        todo = [r for r in rows if r["id"] not in out.done]
        if opts.ray:
            n_written = _generate_ray(todo, opts, sampling, out)
        else:
            n_written = _generate_local(todo, opts, sampling, out, few_shot)
    seconds = time.perf_counter() - start
    return {"questions": len(rows), "generated": n_written, "skipped_done": len(rows) - len(todo),
            "seconds": round(seconds, 2), "output": str(output)}


def _generate_local(todo: list[dict], opts: GenerateOptions, sampling: SamplingConfig, out: ResumableOutput,
                    few_shot: list[dict] | None) -> int:
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
        for row in generate_with(engine, chunk, opts, sampling, few_shot):
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
        self.few_shot = load_few_shot(self.opts.few_shot) if self.opts.few_shot else None
        self.engine = make_engine(self.opts.engine, self.opts.model, self.opts.dtype, self.opts.batch_size,
                                  self.sampling.seed, self.opts.tensor_parallel_size)

    def __call__(self, batch: dict) -> dict:
        rows = [json.loads(s) for s in batch["item"]]
        out = generate_with(self.engine, rows, self.opts, self.sampling, self.few_shot)
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
