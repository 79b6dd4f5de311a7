"""A verl ``DataProto`` of rollouts as verl's rollout builds one (for the verl tests and benchmarks/bench_verl_dense.py).

Prompts left-padded to ``prompt_len``, responses right-padded (EOS appended), the attention mask over both, and
the non-tensor fields verl's reward managers read: ``data_source``, ``reward_model.ground_truth``, ``extra_info``.
"""

import numpy as np
import torch


def rollout_batch(tokenizer, prompts: list[str], responses: list[str], labels: list, prompt_len: int = 8,
                  response_len: int | None = None):
    from verl import DataProto

    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"][-prompt_len:] for p in prompts]
    response_ids = [tokenizer(r, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for r in responses]
    width = response_len or max(len(r) for r in response_ids)
    n = len(responses)
    prompt_t = torch.full((n, prompt_len), tokenizer.pad_token_id)
    response_t = torch.full((n, width), tokenizer.pad_token_id)
    mask = torch.zeros(n, prompt_len + width, dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids, strict=True)):
        r = r[:width]
        prompt_t[i, prompt_len - len(p):] = torch.tensor(p)
        response_t[i, : len(r)] = torch.tensor(r)
        mask[i, prompt_len - len(p): prompt_len + len(r)] = 1
    return DataProto.from_dict(
        tensors={"prompts": prompt_t, "responses": response_t, "attention_mask": mask,
                 "input_ids": torch.cat([prompt_t, response_t], 1)},
        non_tensors={"data_source": np.array(["mralign"] * n, dtype=object),
                     "reward_model": np.array([{"ground_truth": g} for g in labels], dtype=object),
                     "extra_info": np.array([{} for _ in labels], dtype=object)},
    )
