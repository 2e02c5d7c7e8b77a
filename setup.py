"""Packaging for t2t-mtl: a text-to-text unified multitask learning framework."""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    # The floors are the lowest versions the suite's engine, data, tokenizer, metric and kernel tests were run at
    # (README, "Into an existing environment"); a command refuses older ones (t2t_mtl.dependency_floors).
    # torch: 2.8.0 (PyPI's CUDA build, with its triton 3.4.0) was run with every other package at its floor; a CUDA
    # build below 2.8 pins a triton below 3.4
    "torch>=2.8,<3",
    # 5.13: a bf16 ZeRO-0 run whose steps were all skipped loads as built (5.12: shared.weight off by more than bf16
    # rounding); 5.0-5.2's T5Tokenizer.convert_to_native_format drops spiece.model's normalizer (NFKC -> <unk>)
    "transformers>=5.13,<6",
    "tokenizers>=0.22.1",  # 0.22.0 needs huggingface-hub<1, which transformers 5.13 (hub>=1.5) cannot sit beside
    "sentencepiece>=0.1.99",
    "protobuf>=3.20",
    "datasets>=3.3,<6",  # 3.3: a streamed rename that swaps columns keeps both (before: both dropped)
    # 0.19.8: a skipped bad step leaves the weights (0.19.7: NaN after one at fp32 ZeRO-2); below 0.18 its INFO lines
    # go to stdout (train --print-config's YAML)
    "deepspeed>=0.19.8,<1",
    # imported directly (DeepSpeed's config errors and lax reading); 2.0-2.2: DeepSpeed 0.19.8 builds no ZeRO config
    # (model_persistence_threshold's sys.maxsize refused: int_parsing_size), though it requires only pydantic>=2.0.0
    "pydantic>=2.3",
    "evaluate>=0.4.1,<1",
    "jinja2>=3.1,<4",
    "pyyaml>=6",
    "numpy>=1.24",
    "scipy>=1.15",  # 1.10-1.14: the task clusters of `t2t-mtl affinity` differ (tests/test_affinity.py fails)
    "tqdm>=4.66.3",  # datasets' own floor (3.3 and later)
    # (huggingface-hub's own floor) t2t_mtl.dependency_floors reads these requirements with it
    "packaging>=20.9",
    "matplotlib>=3.7",
    "tensorboard>=2.14",
    # offline backends for the shipped evaluate metric modules
    "scikit-learn>=1.3",
    "sacrebleu>=2.3",
    "rouge-score>=0.1.2",
    "seqeval>=1.2.2",
    # 3.4: the kernels' interpreter tests fail below it (3.0: arange of a constexpr; 3.2-3.3: get_int1_ty)
    "triton>=3.4; platform_system == 'Linux' and platform_machine == 'x86_64'",
]

EXTRAS_REQUIRE = {
    "dev": [
        "pytest>=8",
        # benchmark-only peer (LibMTL is installed by benchmarks/gradproj.py's instructions with
        # `pip install --no-deps libmtl`: its torchvision requirement would pull a CUDA torch build)
        "torchjd>=0.18",
        "wandb>=0.17",  # training.wandb's tests (offline mode)
    ],
    "wandb": ["wandb>=0.17"],  # training.wandb: Weights & Biases logging
}

setup(
    name="t2t-mtl",
    version="0.1.0",
    description="Text-to-text unified multitask learning: instructed seq2seq tasks, mixture samplers, "
    "DeepSpeed ZeRO training, Triton kernels for gradient surgery and MoE routing, zero-shot evaluation.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",  # torch 2.13 (the pinned build) needs 3.10; tested on 3.11
    packages=find_packages(include=["t2t_mtl", "t2t_mtl.*", "task_registry", "task_registry.*",
                                    "t2t_kernels", "t2t_kernels.*"]),
    package_data={
        "t2t_mtl": ["configs/*.yaml", "configs/launch/*", "evaluation/metrics/*/*.py"],
        "task_registry": ["builtin/*.yaml", "builtin/**/*.yaml"],
    },
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["t2t-mtl=t2t_mtl.cli:main"]},
)
