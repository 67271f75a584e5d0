"""The embedded testbed: a built-in multi-domain corpus and a tiny OLMoE trained on CPU.

``train_testbed(out_dir)`` saves a checkpoint series plus per-item held-out correctness, the ground
truth that the demo (capture → analyze → report) checks the routing metrics against.
"""

from pathwatch.testbed.corpus import Corpus, DomainSplit, build_corpus
from pathwatch.testbed.run import TestbedRun
from pathwatch.testbed.tokenizer import build_tokenizer
from pathwatch.testbed.train import TestbedConfig, train_testbed

__all__ = [
    "Corpus",
    "DomainSplit",
    "TestbedConfig",
    "TestbedRun",
    "build_corpus",
    "build_tokenizer",
    "train_testbed",
]
