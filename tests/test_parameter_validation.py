"""Every public function and config of ``pathwatch.__all__`` refuses a bad parameter before any work.

In the manner of scikit-learn's ``check_param_validation``: each public callable has a valid call
below, and every one of its parameters is fed a value of the wrong type (an object nothing accepts)
and, where a range applies, values outside it. Each must raise :class:`pathwatch.InputError` whose
message is one line naming the parameter; calls that write (capture_run, analyze_run,
build_report, run_demo, run_study) must leave nothing behind. A public callable or a parameter
without a row here fails the test, so a new option cannot skip validation unnoticed.
"""

from __future__ import annotations

import inspect
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

import pathwatch as pw
from tiny_models import build_tiny_dense_model, build_tiny_model, build_tiny_tokenizer


class _Opaque:
    """A value of a type no parameter accepts."""

    def __repr__(self) -> str:
        return "<opaque>"


OPAQUE = _Opaque()
#: the version, the exceptions and the result type of capture: no parameters to validate
NOT_VALIDATED = {"__version__", "Capture"} | {
    name
    for name in pw.__all__
    if isinstance(getattr(pw, name), type) and issubclass(getattr(pw, name), Exception)
}


@dataclass
class Env:
    """Valid inputs for every public callable, built once per module."""

    root: Path
    model: Any
    tokenizer: Any
    weights: np.ndarray
    routers: list[np.ndarray]
    losses: np.ndarray
    steps: np.ndarray
    correct: np.ndarray
    samples_file: Path
    accuracy_file: Path
    correctness: pl.DataFrame
    checkpoints: list[Path]
    run: Path  # a captured run without tables


@pytest.fixture(scope="module")
def env(captured_testbed, tmp_path_factory) -> Env:
    root = tmp_path_factory.mktemp("validation")
    rng = np.random.default_rng(0)
    weights = rng.dirichlet(np.ones(4), size=(6, 3)).astype(np.float32)
    run = root / "run"
    shutil.copytree(captured_testbed.run, run, ignore=shutil.ignore_patterns("tables"))
    correct = (rng.random((5, 4)) > 0.3).astype(np.int8)
    correctness = pl.DataFrame(
        {
            "step": [100 * t for _ in range(5) for t in range(4)],
            "domain": "math",
            "item_id": [str(i) for i in range(5) for _ in range(4)],
            "correct": correct.ravel().tolist(),
        },
        schema_overrides={"correct": pl.Int8},
    )
    return Env(
        root=root,
        model=build_tiny_model("olmoe"),
        tokenizer=build_tiny_tokenizer(),
        weights=weights,
        routers=[rng.normal(size=(4, 8)) for _ in range(3)],
        losses=np.abs(rng.normal(size=(6, 4))),
        steps=np.array([0, 100, 200, 300]),
        correct=correct,
        samples_file=captured_testbed.samples,
        accuracy_file=captured_testbed.testbed.accuracy_file,
        correctness=correctness,
        checkpoints=list(captured_testbed.testbed.checkpoints[:2]),
        run=run,
    )


def _paths(env: Env) -> Any:
    return pw.pathways(env.weights)


def _series() -> pl.DataFrame:
    return pl.DataFrame({"step": [0, 1, 2, 3], "domain": "math", "distance": [4.0, 3.0, 2.0, 1.0]})


def _accuracy() -> pl.DataFrame:
    return pl.DataFrame({"step": [0, 1, 2, 3], "domain": "math", "accuracy": [0.1, 0.2, 0.6, 0.9]})


NEGATIVE_INTS = [-1, 1.5, True]
BAD_FLAGS = ["yes", 1]

# public name -> (valid call: env -> (args, kwargs), parameter -> bad values besides OPAQUE)
Call = Callable[[Env], tuple[tuple, dict[str, Any]]]
CASES: dict[str, tuple[Call, dict[str, list[Any]]]] = {
    "capture": (
        lambda e: ((e.model, ["1 + 1 = 2", "2 + 2 = 4"], e.tokenizer), {}),
        {
            "model": ["a model"],
            "samples": ["one string"],
            "tokenizer": [],
            "batch_size": [0, *NEGATIVE_INTS],
            "max_length": [1],
            "padding_side": ["middle"],
            "progress": BAD_FLAGS,
            "virtual_experts": [1],
            "weights": ["top"],
            "dtype": ["float8", "bf16"],
            "device": ["tpu", "cuda:x"],
            "device_map": ["balanced"],
            "trust_remote_code": BAD_FLAGS,
        },
    ),
    "read_samples": (lambda e: ((e.samples_file,), {}), {"path": [""]}),
    "draw_probes": (
        lambda e: ((e.samples_file, e.root / "probes-out.jsonl"), {"per_domain": 2}),
        {
            "corpus": [""],
            "out": [""],
            "per_domain": [0, *NEGATIVE_INTS],
            "seed": NEGATIVE_INTS,
            "max_tokens": [1],
            "tokenizer": [""],
            "text_field": [""],
            "domain_field": [""],
            "split": [""],
        },
    ),
    "fit_virtual_experts": (
        lambda e: ((build_tiny_dense_model(), 4), {}),
        {"model": ["a model"], "n_experts": [1, 10**6, *NEGATIVE_INTS], "seed": NEGATIVE_INTS},
    ),
    "VirtualExperts": (
        lambda e: ((np.zeros((2, 8), np.int64), (0, 1)), {}),
        {"assignment": [np.zeros(3)], "layers": [(0,), "01"], "seed": NEGATIVE_INTS},
    ),
    "pathways": (
        lambda e: ((e.weights,), {}),
        {"mean_weights": [np.ones(3)], "threshold": [0, 1.5, float("nan"), "0.7"]},
    ),
    "pathway_string": (lambda e: ((_paths(e)[0],), {}), {"pathway": [[["a"]]]}),
    "pathway_distance": (
        lambda e: ((_paths(e)[0], _paths(e)[1]), {}),
        {"a": [], "b": [], "unit": ["word"]},
    ),
    "mean_pairwise_distance": (
        lambda e: ((_paths(e),), {}),
        {
            "pathways": [],
            "unit": ["word"],
            "max_pairs": [0, *NEGATIVE_INTS],
            "seed": [-1, 1.5],
            "workers": [0, -2],
        },
    ),
    "layer_distances": (
        lambda e: ((_paths(e),), {}),
        {
            "pathways": [],
            "unit": ["word"],
            "max_pairs": [0],
            "seed": [-1],
            "workers": [0, -2, 1.5],
        },
    ),
    "consistency": (
        lambda e: ((e.weights, e.routers), {}),
        {"mean_weights": [np.ones(3)], "router_weights": [np.ones((3, 5))]},
    ),
    "smoothness": (
        lambda e: ((e.weights, e.routers), {}),
        {"mean_weights": [np.ones(3)], "router_weights": [np.ones((3, 5))]},
    ),
    "memorization_onset": (
        lambda e: ((e.losses, e.steps, 0.5), {}),
        {
            "losses": [np.ones(3)],
            "steps": [[3, 2, 1, 0]],
            "eps": [-1.0, float("nan")],
            "delta": [-1.0, float("nan")],
        },
    ),
    "generalization_onset": (
        lambda e: ((e.correct, e.steps), {}),
        {"correct": [np.full((5, 4), 2)], "steps": [[3, 2, 1, 0]]},
    ),
    "auto_epsilon": (
        lambda e: ((e.losses, e.steps), {}),
        {
            "losses": [np.ones(3)],
            "steps": [[3, 2, 1, 0]],
            "delta": [-1.0],
            "target": [(0.5, 0.2)],
            "scale_delta": BAD_FLAGS,
        },
    ),
    "memorization_table": (
        lambda e: ((e.losses, e.steps, ["math"] * 6), {}),
        {
            "losses": [np.ones(3)],
            "steps": [[3, 2, 1, 0]],
            "domains": [["math"]],
            "epsilon": ["bogus", -1.0],
            "delta": [-1.0],
            "target": [(0.5, 0.2)],
            "scale_delta": BAD_FLAGS,
        },
    ),
    "match_groups": (
        lambda e: ((np.eye(3), [0, 0, 100], np.eye(3), [100, 200, 200]), {}),
        {
            "train_embeddings": [np.ones(3)],
            "train_onsets": [[0.5, 1.5, 2.5]],
            "test_embeddings": [np.ones(3)],
            "test_onsets": [["a", "b", "c"]],
        },
    ),
    "embed_texts": (
        lambda e: ((["a b", "c d"],), {"method": "ngram"}),
        {
            "texts": ["one string", [1, 2]],
            "method": ["word2vec"],
            "dim": [0, *NEGATIVE_INTS],
            "batch_size": [0],
            "device": [""],
            "progress": BAD_FLAGS,
        },
    ),
    "read_accuracy": (
        lambda e: ((e.accuracy_file,), {}),
        {
            "paths": [[]],
            "metric": [""],
            "metric_filter": [""],
            "domains": [{"math": 1}],
            "item_id_field": [""],
        },
    ),
    "correlation_table": (
        lambda e: ((_series(), _accuracy()), {"metrics": {"distance": "training data"}}),
        {
            "metrics_df": [pl.DataFrame({"step": [0]})],
            "accuracy_df": [pl.DataFrame({"step": [0]})],
            "metrics": [{"distance": "anything"}],
            "start": ["soon", -1],
            "n_boot": [0, *NEGATIVE_INTS],
            "confidence": [0, 1, "0.9"],
            "seed": [-1],
        },
    ),
    "generalization_table": (
        lambda e: ((e.correctness,), {}),
        {"correctness": [pl.DataFrame({"step": [0]})]},
    ),
    "lagged_correlation": (
        lambda e: ((np.arange(8.0), np.arange(8.0) ** 2), {"max_lag": 2}),
        {"metric": [np.ones((2, 2))], "accuracy": [np.ones(3)], "max_lag": [-1, 8, 1.5]},
    ),
    "detect_generalization": (
        lambda e: ((np.arange(8), np.arange(8.0)[::-1]), {}),
        {
            "steps": [[3, 2, 1, 0, 4, 5, 6, 7]],
            "signal": [np.ones(3)],
            "onset": [1.5],
            "run": [0],
            "min_drop": [-0.1, 1.0],
            "window": [0],
        },
    ),
    "detection_lead": (
        lambda e: ((np.arange(8), 2, 5), {}),
        {"steps": [[3, 2, 1]], "fired": [1.5, 99], "crossed": [1.5, 99]},
    ),
    "RunStore": (lambda e: ((e.run,), {}), {"path": [""]}),
    "CaptureConfig": (
        lambda e: ((), {}),
        {
            "batch_size": [0, *NEGATIVE_INTS],
            "max_length": [1],
            "shard_size": [0],
            "weights": ["top"],
            "virtual_experts": [1],
            "backend": ["rey"],
            "ray_address": [""],
            "dtype": ["float8", "bf16"],
            "device": ["tpu", "cuda:x"],
            "device_map": ["balanced"],
            "trust_remote_code": BAD_FLAGS,
        },
    ),
    "AnalyzeConfig": (
        lambda e: ((), {}),
        {
            "threshold": [0, 1.5, float("nan")],
            "unit": ["word"],
            "epsilon": [-1.0, float("inf")],
            "delta": [-3],
            "scale_delta": BAD_FLAGS,
            "max_pairs": [0, *NEGATIVE_INTS],
            "validation_domains": ["validation", [""]],
            "control_domains": ["facts", [""]],
            "early_lead": [0, *NEGATIVE_INTS],
            "start": ["soon", -1],
            "embedder": ["bogus"],
            "n_boot": [0],
            "seed": [-1],
            "domain_map": ["add", {"arith_add": ""}, {"arith_add": "all"}, [("a", "b", "c")]],
            "item_id_field": [""],
            "metric": [""],
            "metric_filter": [""],
        },
    ),
    "StudyConfig": (
        lambda e: (((pw.study.Arm("a", pw.testbed.TestbedConfig.tiny(), (0,)),),), {}),
        {
            "arms": [(), ("a",)],
            "thresholds": [(1.5,)],
            "units": [("word",)],
            "variant_seeds": [-1],
            "weights": [("top",)],
            "max_lag": [-1],
            "detector_run": [0],
            "detector_min_drop": [1.0],
            "detector_window": [0],
            "level": [0, 1],
            "n_boot": [0],
            "jobs": [0],
            "trends": [{"alpha": 0.1}],
            "compare_arms": [0, 2],
        },
    ),
    "PathwayMonitor": (
        lambda e: ((["1 + 1 = 2", "2 + 2 = 4"],), {"tokenizer": e.tokenizer}),
        {
            "samples": [42],
            "tokenizer": [],
            "sinks": [[42]],
            "threshold": [0],
            "unit": ["word"],
            "epsilon": ["bogus", -1.0],
            "delta": [-1.0],
            "control_domains": ["facts", [""]],
            "max_pairs": [0],
            "warn_after": [0],
            "stall_tolerance": [-1.0],
            "batch_size": [0],
            "max_length": [1],
            "dtype": ["float8", "bf16"],
            "device": ["tpu", "cuda:x"],
            "device_map": ["balanced"],
            "trust_remote_code": BAD_FLAGS,
        },
    ),
    "PathwayCallback": (
        lambda e: ((pw.PathwayMonitor(["1 + 1 = 2", "2 + 2 = 4"], tokenizer=e.tokenizer),), {}),
        {"monitor": [], "on_evaluate": BAD_FLAGS},
    ),
    "capture_run": (
        lambda e: ((e.checkpoints, e.samples_file, e.root / "capture-out"), {"progress": False}),
        {
            "checkpoints": [[], "one-dir"],
            "samples_path": [""],
            "out": [""],
            "config": [{"batch_size": 8}],
            "steps": [[1], [-1, 2]],
            "revisions": ["", 5],
            "local_files_only": BAD_FLAGS,
            "progress": BAD_FLAGS,
        },
    ),
    "evaluate_checkpoints": (
        lambda e: ((e.checkpoints, ["arc_easy"], e.root / "evaluate-out"), {"progress": False}),
        {
            "checkpoints": [[], "one-dir"],
            "tasks": [[], "arc_easy", [""]],
            "out": [""],
            "steps": [[1], [-1, 2]],
            "include_path": ["", ["no-such-dir"]],
            "batch_size": [0],
            "device": ["", "tpu"],
            "revisions": ["", 5],
            "dtype": ["float8"],
            "trust_remote_code": BAD_FLAGS,
            "limit": [0],
            "progress": BAD_FLAGS,
        },
    ),
    "analyze_run": (
        lambda e: ((e.run,), {"progress": False, "write": False}),
        {
            "run": [""],
            "config": [{"threshold": 0.5}],
            "accuracy": [[]],
            "test_items": [""],
            "progress": BAD_FLAGS,
            "write": BAD_FLAGS,
        },
    ),
    "build_report": (
        lambda e: ((e.run,), {"out": e.root / "report-out"}),
        {"run_dir": [""], "out": [""]},
    ),
    "run_demo": (
        lambda e: ((e.root / "demo-out",), {"progress": False}),
        {"out": [""], "seed": NEGATIVE_INTS, "config": [{"prime": 7}], "progress": BAD_FLAGS},
    ),
    "run_study": (
        lambda e: ((e.root / "study-out",), {"progress": False}),
        {"out": [""], "config": [{"arms": ()}], "progress": BAD_FLAGS},
    ),
}

#: what each writing call would create: it must not exist after a refused call
OUTPUTS: dict[str, Callable[[Env], Path]] = {
    "capture_run": lambda e: e.root / "capture-out",
    "draw_probes": lambda e: e.root / "probes-out.jsonl",
    "analyze_run": lambda e: e.run / "tables",
    "evaluate_checkpoints": lambda e: e.root / "evaluate-out",
    "build_report": lambda e: e.root / "report-out",
    "run_demo": lambda e: e.root / "demo-out",
    "run_study": lambda e: e.root / "study-out",
}


def _callable(name: str) -> Callable[..., Any]:
    # pathwatch.capture is both a package and its function: take the function
    return import_module("pathwatch.capture").capture if name == "capture" else getattr(pw, name)


def _parameters(name: str) -> list[str]:
    return [
        p.name
        for p in inspect.signature(_callable(name)).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def test_every_public_callable_has_a_row() -> None:
    public = {name for name in pw.__all__ if name not in NOT_VALIDATED}
    assert public == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_parameter_has_a_row(name: str) -> None:
    assert set(CASES[name][1]) == set(_parameters(name))


def _label(value: Any) -> str:
    """A short test id for a bad value: scalars as they are, containers by their type."""
    if value is None or isinstance(value, bool | int | float | str | _Opaque):
        return repr(value)
    return type(value).__name__


def _bad_calls() -> list[tuple[str, str, Any]]:
    return [
        (name, parameter, value)
        for name, (_, bad) in CASES.items()
        for parameter, values in bad.items()
        for value in [OPAQUE, *values]
    ]


@pytest.mark.parametrize(
    ("name", "parameter", "value"),
    _bad_calls(),
    ids=[f"{n}-{p}-{_label(v)}" for n, p, v in _bad_calls()],
)
def test_a_bad_parameter_is_one_line_before_any_work(
    env: Env, name: str, parameter: str, value: Any
) -> None:
    args, kwargs = CASES[name][0](env)
    names = _parameters(name)
    bound = dict(zip(names, args, strict=False)) | kwargs | {parameter: value}
    with pytest.raises(pw.InputError) as info:
        _callable(name)(**bound)
    message = str(info.value)
    assert "\n" not in message
    assert parameter in message or repr(value) in message, message
    if name in OUTPUTS:
        assert not OUTPUTS[name](env).exists()


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_valid_call_is_accepted(env: Env, name: str) -> None:
    """The rows above are bad only in the one parameter: the call itself is valid up to its work
    (calls that would train or capture for long are only bound, not run)."""
    args, kwargs = CASES[name][0](env)
    if name in {
        "capture_run",
        "run_demo",
        "run_study",
        "build_report",
        "analyze_run",
        "evaluate_checkpoints",
        "draw_probes",  # writes the file the refused calls must leave absent
    }:
        inspect.signature(_callable(name)).bind(*args, **kwargs)
        return
    _callable(name)(*args, **kwargs)
