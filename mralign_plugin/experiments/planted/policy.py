"""The planted world's policy: a tiny Llama over the world's words, its supervised start, sampling, and measures.

* ``build_model``: a word-level tokenizer (``tokenizers`` ``WordLevel``, split on single spaces, so decoding
  joins words with one space and gives back the world's text exactly) and a small random ``LlamaForCausalLM``,
  saved to a folder the trainer loads by path.
* ``supervised``: plain next-token training on the response tokens of planted traces (the "base policy").
* ``sample``: batched sampling (every prompt has the same length, so no padding).
* ``measure``: accuracy and Mis (``eval/metrics.score_response``), the frequency of each planted transition and
  the distance of the empirical transition matrix to P_good and P_bad, from the known-states reading.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from mralign_plugin.core.segment import parse_response
from mralign_plugin.core.taxonomy import PAPER_TAXONOMY
from mralign_plugin.eval.metrics import score_response
from mralign_plugin.experiments.planted.estimation import VISITED_ROWS
from mralign_plugin.experiments.planted.world import P_BAD, P_GOOD, PLANTED, Question, known_states, vocabulary

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"


def build_model(out_dir: str | Path, questions: list[Question], seed: int, hidden: int = 64, layers: int = 2) -> Path:
    """Write the world's word-level tokenizer and a random tiny Llama (about 0.1 M parameters) to ``out_dir``."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = [PAD, EOS, UNK, *vocabulary(questions)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="removed")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, unk_token=UNK,
                                        model_max_length=512)
    config = LlamaConfig(vocab_size=len(words), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, bos_token_id=tokenizer.eos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _encode(tokenizer, prompt: str, response: str) -> tuple[list[int], list[int]]:
    """(input ids, labels): prompt then response then EOS, as the KTO data encodes a row; prompt labels -100."""
    p = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return p + r, [-100] * len(p) + r


def supervised(model_dir: str | Path, records: list[dict], out_dir: str | Path, seed: int, epochs: int = 4,
               batch_size: int = 32, lr: float = 3e-3) -> dict:
    """Next-token training on the responses of ``records``; saves the model to ``out_dir``.

    Returns:
        ``{"steps": n, "first_loss": x, "last_loss": y}`` (mean token cross-entropy of the first / last epoch).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    encoded = [_encode(tokenizer, r["prompt"], r["response"]) for r in records]
    rng = random.Random(seed)
    optim = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    epoch_losses, steps = [], 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(epochs):
            order = list(range(len(encoded)))
            rng.shuffle(order)
            losses = []
            for start in range(0, len(order), batch_size):
                batch = [encoded[i] for i in order[start:start + batch_size]]
                width = max(len(ids) for ids, _ in batch)
                ids = torch.full((len(batch), width), tokenizer.pad_token_id)  # (B, T)
                labels = torch.full((len(batch), width), -100)  # (B, T)
                mask = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
                for b, (x, y) in enumerate(batch):
                    ids[b, :len(x)], labels[b, :len(y)], mask[b, :len(x)] = torch.tensor(x), torch.tensor(y), 1
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                optim.zero_grad()
                loss.backward()
                optim.step()
                losses.append(loss.item())
                steps += 1
            epoch_losses.append(float(np.mean(losses)))
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"steps": steps, "first_loss": epoch_losses[0], "last_loss": epoch_losses[-1]}


def sample(model_dir: str | Path, questions: list[Question], per_question: int, seed: int,
           max_new_tokens: int = 160, batch_size: int = 256) -> list[dict]:
    """``per_question`` samples (temperature 1) for each question: ``[{"question": q, "response": text}]``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    todo = [q for q in questions for _ in range(per_question)]
    out = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            ids = torch.tensor([tokenizer(q.prompt, add_special_tokens=True)["input_ids"] for q in chunk])  # (B, Tp)
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0,
                                 temperature=1.0, max_new_tokens=max_new_tokens)  # (B, Tp + T)
            texts = tokenizer.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True)
            out += [{"question": q, "response": t.strip()} for q, t in zip(chunk, texts, strict=True)]
    return out


def primary_path(response: str) -> list[str]:
    """The primary state (first template sentence) of each readable thinking paragraph, in order."""
    parsed = parse_response(response)
    paragraphs = [response[a:b] for a, b in parsed.paragraphs]
    return [s["states"][0] for s in known_states(paragraphs) if s["states"]]


def transition_counts(paths: list[list[str]]) -> np.ndarray:
    """(K, K) counts of primary-state transitions <start> -> path -> <stop> over ``paths``."""
    K = PAPER_TAXONOMY.num_states
    counts = np.zeros((K, K))
    for path in paths:
        idx = [PAPER_TAXONOMY.start, *(PAPER_TAXONOMY.index(s) for s in path), PAPER_TAXONOMY.stop]
        np.add.at(counts, (idx[:-1], idx[1:]), 1.0)
    return counts


def row_distance(counts: np.ndarray, P: np.ndarray) -> float:
    """Visit-weighted mean total variation between the empirical rows of ``counts`` and ``P`` (world rows)."""
    rows = counts[VISITED_ROWS]  # (R, K)
    n = rows.sum(1)  # (R,)
    seen = n > 0
    if not seen.any():
        return float("nan")
    tv = 0.5 * np.abs(rows[seen] / n[seen, None] - P[VISITED_ROWS][seen]).sum(1)  # (R',)
    return float((tv * n[seen]).sum() / n[seen].sum())


def measure(samples: list[dict]) -> dict:
    """Policy metrics over ``samples`` (``sample``'s output).

    Returns:
        acc, mis (fraction of items whose thinking holds the gold and the answer does not, or the reverse),
        ``freq/<from>-><to>`` the empirical Pr(to | from) of each planted cell, ``dist_good`` / ``dist_bad``,
        n, and the per-item 0/1 arrays ``items`` (correct, mis) and the raw counts for tests and intervals.
    """
    scores = [score_response(s["response"], [s["question"].gold], thinking=True) for s in samples]
    counts = transition_counts([primary_path(s["response"]) for s in samples])
    out = {"n": len(samples), "acc": float(np.mean([sc["correct"] for sc in scores])),
           "mis": float(np.mean([bool(sc["mis"]) for sc in scores])),
           "dist_good": row_distance(counts, P_GOOD), "dist_bad": row_distance(counts, P_BAD)}
    for a, b, _ in PLANTED:
        i, j = PAPER_TAXONOMY.index(a), PAPER_TAXONOMY.index(b)
        out[f"freq/{a}->{b}"] = float(counts[i, j] / counts[i].sum()) if counts[i].sum() else float("nan")
        out[f"count/{a}->{b}"] = [float(counts[i, j]), float(counts[i].sum())]
    return out
