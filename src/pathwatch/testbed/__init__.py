"""The embedded testbeds: built-in corpora and tiny MoEs trained on CPU, with their ground truth.

``train_testbed(out_dir)`` saves a checkpoint series plus per-item held-out correctness, the ground
truth that the demo (capture → analyze → report) checks the routing metrics against; the testbeds
that the demo and the study can train are the presets of :mod:`pathwatch.testbed.presets`. Names
are imported lazily, so the preset registry loads without torch.
"""

from __future__ import annotations

from pathwatch._lazy import lazy_exports

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "Corpus": "pathwatch.testbed.corpus",
    "DomainSplit": "pathwatch.testbed.corpus",
    "build_corpus": "pathwatch.testbed.corpus",
    "build_tokenizer": "pathwatch.testbed.tokenizer",
    "TestbedConfig": "pathwatch.testbed.train",
    "train_testbed": "pathwatch.testbed.train",
    "TestbedRun": "pathwatch.testbed.run",
    "StreamConfig": "pathwatch.testbed.stream",
    "train_stream_testbed": "pathwatch.testbed.stream",
    "PRESETS": "pathwatch.testbed.presets",
    "preset_config": "pathwatch.testbed.presets",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
