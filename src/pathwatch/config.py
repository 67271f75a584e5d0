"""The settings of the capture and analysis stages, and the names their options accept.

:class:`CaptureConfig` configures :func:`pathwatch.capture_run`, :class:`AnalyzeConfig`
:func:`pathwatch.analyze_run`. Both are frozen and check every field on construction, so a bad
value is one line before any model, file or unit is touched. This module imports nothing heavy (no
torch, no polars): the CLI reads its defaults from these classes, and ``pathwatch --help`` stays
fast. The stages validate against the same name tuples.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pathwatch._validate import (
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_text,
    is_int,
)
from pathwatch.errors import invalid_parameter

#: Router weightings a capture averages per sample: every expert's probability (SPEC), or per
#: token only the top-k experts' probabilities renormalized to 1 (``Settings.weights`` of a run).
WEIGHTS = ("softmax", "topk")
#: How capture_run spreads its units (:mod:`pathwatch.distributed`).
BACKENDS = ("local", "ray")
#: Dtypes a checkpoint is loaded in; "auto": its own (config ``dtype``) on a GPU, float32 on CPU.
DTYPES = ("auto", "bfloat16", "float16", "float32")
#: ``device_map`` values: "auto" spreads a model larger than one GPU over all of them (accelerate).
DEVICE_MAPS = ("auto",)
_DEVICE = re.compile(r"cpu|cuda(:\d+)?")
#: Symbols of the pathway edit distance: the paper's string, or one per expert id.
UNITS = ("char", "expert")
#: Text embedders for pairing train and test groups (:func:`pathwatch.embed_texts`).
EMBEDDERS = ("auto", "minilm", "ngram")


@dataclass(frozen=True)
class CaptureConfig:
    """Settings of :func:`pathwatch.capture_run`.

    Attributes
    ----------
    batch_size : int, default 16
        Samples per forward pass.
    max_length : int, default 512
        Tokens kept per sample (at least 2: one scored next-token target); longer ones are cut.
    shard_size : int, default 1024
        Samples per stored unit; a killed capture loses at most one unit of work.
    weights : {"softmax", "topk"}, default "softmax"
        Router weighting averaged per sample (recorded in the manifest's settings).
    virtual_experts : int or None, default None
        Capture *dense* checkpoints through K ≥ 2 virtual experts per MLP layer (an extension
        beyond the paper, :mod:`pathwatch.capture.virtual`); needs ``weights="softmax"``.
    backend : {"local", "ray"}, default "local"
        "local": this process, or every process of an ``accelerate launch``; "ray": one Ray task
        per batch of a checkpoint's units (extra ``ray``).
    ray_address : str or None, default None
        Ray cluster for ``backend="ray"`` (e.g. ``"auto"``, ``"ray://head:10001"``); None starts a
        local Ray instance.
    dtype : {"auto", "bfloat16", "float16", "float32"}, default "auto"
        Dtype the checkpoints are loaded in; "auto" is the checkpoint's own ``dtype`` on a GPU and
        float32 on CPU (recorded in the manifest's settings). Routing reductions and the loss are
        float32 whatever the model's dtype.
    device : str or None, default None
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; None: CUDA when available, else CPU.
    device_map : {"auto"} or None, default None
        "auto" spreads each checkpoint over all GPUs (a model larger than one; extra ``gpu``).
    trust_remote_code : bool, default False
        Let transformers run a checkpoint's own modelling code (off unless asked for).

    Examples
    --------
    >>> CaptureConfig(batch_size=32, weights="topk").max_length
    512
    >>> CaptureConfig(shard_size=0)
    Traceback (most recent call last):
    ...
    pathwatch.errors.InputError: The 'shard_size' parameter of capture_run must be an int >= 1. Got 0 instead.
    """

    batch_size: int = 16
    max_length: int = 512
    shard_size: int = 1024
    weights: str = "softmax"
    virtual_experts: int | None = None
    backend: str = "local"
    ray_address: str | None = None
    dtype: str = "auto"
    device: str | None = None
    device_map: str | None = None
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        func = "capture_run"  # errors name the call these settings configure
        check_load_options(func, self.dtype, self.device, self.device_map, self.trust_remote_code)
        for name in ("batch_size", "shard_size"):
            _set(self, name, check_int(func, name, getattr(self, name), low=1))
        _set(self, "max_length", check_int(func, "max_length", self.max_length, low=2))
        check_choice(func, "weights", self.weights, WEIGHTS)
        _set(
            self,
            "virtual_experts",
            check_int(func, "virtual_experts", self.virtual_experts, low=2, allow_none=True),
        )
        if self.virtual_experts is not None and self.weights != "softmax":
            raise invalid_parameter(
                func, "weights", "'softmax' with virtual_experts (they have no top-k)", self.weights
            )
        check_choice(func, "backend", self.backend, BACKENDS)
        check_text(func, "ray_address", self.ray_address, allow_none=True)
        if self.ray_address is not None and self.backend != "ray":
            raise invalid_parameter(
                func, "ray_address", "None unless backend is 'ray'", self.ray_address
            )


def check_load_options(
    func: str, dtype: object, device: object, device_map: object, trust_remote_code: object
) -> None:
    """The checks of how a checkpoint is loaded: dtype, device, device_map, trust_remote_code."""
    check_choice(func, "dtype", dtype, DTYPES)
    if device is not None and not (isinstance(device, str) and _DEVICE.fullmatch(device)):
        raise invalid_parameter(func, "device", "None, 'cpu', 'cuda' or 'cuda:N'", device)
    if device_map is not None:
        check_choice(func, "device_map", device_map, DEVICE_MAPS)
        if device is not None:
            raise invalid_parameter(
                func, "device", "None with device_map (it places the model itself)", device
            )
    check_bool(func, "trust_remote_code", trust_remote_code)


@dataclass(frozen=True)
class AnalyzeConfig:
    """Settings of :func:`pathwatch.analyze_run` (defaults from SPEC §1).

    Attributes
    ----------
    threshold : float, default 0.7
        Cumulative router weight a pathway keeps per layer, in (0, 1].
    unit : {"char", "expert"}, default "char"
        Symbols of the pathway edit distance (``"char"``: the paper's string).
    epsilon : float or None, default None
        Memorization loss threshold (≥ 0) for every domain; None chooses it per domain so that
        20–25% of the domain is memorized before the last checkpoint.
    delta : float, default 0.05
        Memorization stability band, ≥ 0, on the paper's 0.1 ε grid.
    scale_delta : bool, default True
        Where the automatic ε is refined below the 0.1 grid, scale δ with the grid step
        (``delta * grid_step / 0.1``, :func:`pathwatch.dynamics.onsets.scaled_delta`); False
        keeps δ absolute. A given ``epsilon`` always uses ``delta`` as it is.
    max_pairs : int or None, default 200_000
        A group with more pairs than this gets a sampled estimate with a 95% CI; None is always exact.
    validation_domains : tuple of str, default ("validation",)
        Sample domains that form a validation set: only their mean loss is used, as a baseline.
    control_domains : tuple of str, default ("facts",)
        Training domains that cannot generalize (memorize-only): the routing churn of the others
        is also reported minus theirs (``churn_excess``).
    early_lead : int, default 3
        A domain's fixed early memorization group ``early`` holds its probes memorized at least
        this many checkpoints before accuracy's rise starts (needs accuracy); it and each
        ``train@<t*>`` group of those probes are correlated from their own t* on.
    start : "auto" or int, default "auto"
        First checkpoint step of the correlation window; "auto" detects accuracy's sustained rise
        per domain.
    embedder : {"auto", "minilm", "ngram"}, default "auto"
        Text embeddings for pairing train and test groups.
    n_boot : int, default 2000
        Bootstrap replicates of the correlation CIs, ≥ 1.
    seed : int, default 0
        Seed of pair sampling and bootstrap, ≥ 0.
    domain_map : mapping of str to str, default {}
        Accuracy task → probe domain (lm-eval task names rarely equal the probe domains); tasks
        mapped to one domain are pooled. Stored as sorted ``(task, domain)`` pairs.
    item_id_field : str, default "id"
        lm-eval doc field that holds an item's id (docs without it: ``<task>/<doc_id>``).
    metric : str or None, default None
        lm-eval metric to read (default: acc, exact_match, acc_norm, the first present).
    metric_filter : str or None, default None
        lm-eval filter of that metric (default: ``none`` first).

    Examples
    --------
    >>> AnalyzeConfig(domain_map={"arith_add": "add"}).domain_map
    (('arith_add', 'add'),)
    >>> AnalyzeConfig(threshold=0.5).unit
    'char'
    >>> AnalyzeConfig(delta=-3)
    Traceback (most recent call last):
    ...
    pathwatch.errors.InputError: The 'delta' parameter of analyze_run must be a float >= 0. Got -3 instead.
    """

    threshold: float = 0.7
    unit: str = "char"
    epsilon: float | None = None
    delta: float = 0.05
    scale_delta: bool = True
    max_pairs: int | None = 200_000
    validation_domains: tuple[str, ...] = ("validation",)
    control_domains: tuple[str, ...] = ("facts",)
    early_lead: int = 3
    start: str | int = "auto"
    embedder: str = "auto"
    n_boot: int = 2000
    seed: int = 0
    domain_map: Mapping[str, str] | tuple[tuple[str, str], ...] = ()
    item_id_field: str = "id"
    metric: str | None = None
    metric_filter: str | None = None

    def __post_init__(self) -> None:
        func = "analyze_run"  # errors name the call these settings configure
        _set(
            self,
            "threshold",
            check_float(func, "threshold", self.threshold, low=0, high=1, low_open=True),
        )
        check_choice(func, "unit", self.unit, UNITS)
        _set(self, "epsilon", check_float(func, "epsilon", self.epsilon, low=0, allow_none=True))
        _set(self, "delta", check_float(func, "delta", self.delta, low=0))
        _set(
            self, "max_pairs", check_int(func, "max_pairs", self.max_pairs, low=1, allow_none=True)
        )
        check_bool(func, "scale_delta", self.scale_delta)
        for name in ("validation_domains", "control_domains"):
            domains = getattr(self, name)
            if (
                isinstance(domains, str)
                or not isinstance(domains, Iterable)
                or not all(isinstance(d, str) and d for d in domains)
            ):
                raise invalid_parameter(func, name, "a tuple of non-empty domain names", domains)
            _set(self, name, tuple(domains))
        _set(self, "early_lead", check_int(func, "early_lead", self.early_lead, low=1))
        if self.start != "auto":
            if not is_int(self.start) or self.start < 0:
                raise invalid_parameter(
                    func, "start", "'auto' or an int >= 0 (a checkpoint step)", self.start
                )
            _set(self, "start", int(self.start))
        check_choice(func, "embedder", self.embedder, EMBEDDERS)
        _set(self, "n_boot", check_int(func, "n_boot", self.n_boot, low=1))
        _set(self, "seed", check_int(func, "seed", self.seed, low=0))
        _set(self, "domain_map", _domain_pairs(func, self.domain_map))
        check_text(func, "item_id_field", self.item_id_field)
        check_text(func, "metric", self.metric, allow_none=True)
        check_text(func, "metric_filter", self.metric_filter, allow_none=True)


def _domain_pairs(func: str, value: object) -> tuple[tuple[str, str], ...]:
    """A task → domain mapping (or its pairs) as sorted pairs of non-empty names."""
    pairs = value.items() if isinstance(value, Mapping) else value
    expected = "a mapping of task to domain name (non-empty strings; 'all' is reserved)"
    if isinstance(pairs, str) or not isinstance(pairs, Iterable):
        raise invalid_parameter(func, "domain_map", expected, value)
    pairs = list(pairs)
    ok = all(
        isinstance(p, tuple | list)
        and len(p) == 2
        and all(isinstance(x, str) and x for x in p)
        and p[1] != "all"
        for p in pairs
    )
    if not ok or len({p[0] for p in pairs}) != len(pairs):
        raise invalid_parameter(func, "domain_map", expected, value)
    return tuple(sorted((str(t), str(d)) for t, d in pairs))


def _set(config: object, name: str, value: object) -> None:
    """Store a checked (normalized) value on a frozen dataclass in its ``__post_init__``."""
    object.__setattr__(config, name, value)
