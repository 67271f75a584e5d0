"""Watch a training run from inside its loop: the pipeline's stages on a fixed probe set, per checkpoint.

:class:`PathwayMonitor` holds a fixed set of already-seen training samples (the *probe set*). At each
checkpoint, :meth:`PathwayMonitor.on_checkpoint` captures their routing with
:func:`pathwatch.capture.capture`, keeps their loss history, and computes with
:mod:`pathwatch.metrics` and :mod:`pathwatch.dynamics.onsets` the quantities the offline analysis
reports: pathway distance (all samples, and memorized ones only), consistency, smoothness, adjacent
layer cosine, memorized fraction, loss and the routing churn of memorized samples
(:mod:`pathwatch.metrics.churn`; minus the control domains' where the probe set has one), pooled
(``all``) and per domain. It holds no metric code of
its own, so its numbers equal what ``pathwatch analyze`` computes on the same checkpoints.

Memorization online. SPEC's rule needs the last checkpoint T of the run, unknown while it trains. The
monitor applies the rule with T = the latest checkpoint seen so far, and counts a sample as memorized
when its onset lies *before* that checkpoint: loss ≤ ε at the previous and latest checkpoints (and
at every checkpoint since its onset), each within δ of the latest loss. At the first checkpoint no
sample can be memorized. At the run's last checkpoint this is exactly the offline rule.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from pathwatch._validate import check_float, check_int, is_int, is_real
from pathwatch.capture import Capture, capture, load_model
from pathwatch.capture.samples import DEFAULT_DOMAIN, check_samples, read_samples
from pathwatch.config import UNITS, check_load_options
from pathwatch.dynamics.onsets import NEVER, memorization_table
from pathwatch.errors import InputError, invalid_parameter, unknown_name
from pathwatch.metrics import (
    Pathways,
    consistency_metrics,
    group_churn,
    mean_pairwise_distance,
    pathways,
    routing_churn,
)
from pathwatch.monitor.sinks import Sink

ALL = "all"
"""Scope name of the pooled metrics (every probe sample)."""


class MonitorWarning(UserWarning):
    """The generalization signal of a monitored run stalls or reverses."""


class PathwayMonitor:
    """Compute pathway metrics on a fixed probe set at every checkpoint of a training run.

    Parameters
    ----------
    samples : sequence of str, token-id sequences, or mappings; or a path
        The probe set: training samples the model has already seen, in any form
        :func:`pathwatch.capture.capture` takes, or a JSONL / Parquet samples file
        (:func:`pathwatch.read_samples`). When samples carry a ``domain``, every metric is also
        reported per domain.
    tokenizer : transformers tokenizer, optional
        Needed when samples are text.
    sinks : iterable of Sink
        Where each checkpoint's record goes (:class:`~pathwatch.monitor.sinks.JSONLSink`,
        :class:`~pathwatch.monitor.sinks.TensorBoardSink`, :class:`~pathwatch.monitor.sinks.WandbSink`,
        or any object with ``log(record, step)`` and ``close()``).
    threshold : float, default 0.7
        Cumulative routing weight a pathway keeps per layer, in (0, 1].
    unit : {"char", "expert"}, default "char"
        Unit of the pathway distance (see :func:`pathwatch.mean_pairwise_distance`).
    epsilon : "auto", float, or mapping domain -> float, default "auto"
        Loss threshold ε of memorization. ``"auto"`` re-chooses ε per domain at every checkpoint with
        :func:`pathwatch.auto_epsilon` on the history so far (so the memorized fraction stays near
        its 20–25 % target band by construction and the logged ``epsilon/<domain>`` is the signal);
        a fixed ε makes the memorized fraction itself the signal.
    delta : float, default 0.05
        Stability tolerance δ of memorization (scaled with ε's grid step below the 0.1 grid, as
        in :func:`pathwatch.auto_epsilon`, when ε is "auto").
    control_domains : sequence of str, default ("facts",)
        Memorize-only domains: where the probe set has one, ``churn_excess/<scope>`` logs the
        churn of each scope minus theirs.
    max_pairs : int, optional
        Estimate distances on this many sampled pairs per group instead of all pairs.
    warn_after : int, default 3
        Warn when the distance of memorized samples has risen (the signal reverses) or stalled at
        this many consecutive checkpoints.
    stall_tolerance : float or None, default 0.01
        A checkpoint "stalls" when the memorized distance moved by at most this fraction of its
        previous value. A domain that has finished generalizing stalls too: read the warning with
        the loss. None turns the stall warning off.
    batch_size, max_length : int
        Passed to :func:`pathwatch.capture.capture`.
    dtype, device, device_map, trust_remote_code
        How :meth:`on_checkpoint` loads a checkpoint given as a directory or ``REPO@REVISION``
        (monitoring saved checkpoints from another process), as :func:`pathwatch.capture.capture`
        does; a model in memory is captured as it is. Reductions are float32 either way.

    Attributes
    ----------
    steps : list of int
        Steps of the checkpoints seen so far.
    history : list of dict
        The record of each checkpoint (what the sinks received, plus ``"step"``).
    losses : float array of shape (N, T)
        Per-sample loss at each checkpoint seen so far.

    Examples
    --------
    >>> from transformers import OlmoeConfig, OlmoeForCausalLM
    >>> config = OlmoeConfig(vocab_size=32, hidden_size=16, intermediate_size=8, num_hidden_layers=2,
    ...                      num_attention_heads=2, num_experts=4, num_experts_per_tok=2, eos_token_id=2)
    >>> monitor = PathwayMonitor([[5, 6, 7, 8], [9, 10, 11, 12], [5, 6, 9, 10]])
    >>> record = monitor.on_checkpoint(OlmoeForCausalLM(config), step=100)
    >>> record["memorized_fraction/all"], record["consistency_nan/all"]  # one checkpoint; 2 layers
    (0.0, 3.0)
    """

    def __init__(
        self,
        samples: Sequence[Any] | str | os.PathLike[str],
        *,
        tokenizer: Any = None,
        sinks: Iterable[Sink] = (),
        threshold: float = 0.7,
        unit: Literal["char", "expert"] = "char",
        epsilon: float | Mapping[str, float] | Literal["auto"] = "auto",
        delta: float = 0.05,
        control_domains: Sequence[str] = ("facts",),
        max_pairs: int | None = None,
        warn_after: int = 3,
        stall_tolerance: float | None = 0.01,
        batch_size: int = 16,
        max_length: int = 512,
        dtype: str = "auto",
        device: str | None = None,
        device_map: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        func = "PathwayMonitor"
        check_load_options(func, dtype, device, device_map, trust_remote_code)
        check_float(func, "threshold", threshold, low=0, high=1, low_open=True)
        if unit not in UNITS:
            raise unknown_name("distance unit", str(unit), UNITS)
        check_float(func, "delta", delta, low=0)
        if (
            isinstance(control_domains, str)
            or not isinstance(control_domains, Iterable)
            or not all(isinstance(d, str) and d for d in control_domains)
        ):
            raise invalid_parameter(
                func, "control_domains", "a sequence of domain names", control_domains
            )
        check_int(func, "max_pairs", max_pairs, low=1, allow_none=True)
        check_int(func, "warn_after", warn_after, low=1)
        check_float(func, "stall_tolerance", stall_tolerance, low=0, allow_none=True)
        check_int(func, "batch_size", batch_size, low=1)
        check_int(func, "max_length", max_length, low=2)
        if tokenizer is not None and not callable(tokenizer):
            raise invalid_parameter(func, "tokenizer", "None or a tokenizer (callable)", tokenizer)
        sinks = list(sinks) if isinstance(sinks, Iterable) else sinks
        if not isinstance(sinks, list) or not all(
            callable(getattr(sink, "log", None)) and callable(getattr(sink, "close", None))
            for sink in sinks
        ):
            raise invalid_parameter(func, "sinks", "an iterable of sinks (log, close)", sinks)
        if isinstance(samples, (str, os.PathLike)):
            samples = read_samples(samples)
        if isinstance(samples, (bytes, Mapping)) or not isinstance(samples, Sequence):
            raise invalid_parameter(
                func, "samples", "a list of samples or a samples file", type(samples).__name__
            )
        self.samples = check_samples((s, f"samples[{i}]") for i, s in enumerate(samples))
        self.tokenizer = tokenizer
        self.sinks = list(sinks)
        self.threshold = float(threshold)
        self.unit = unit
        self.delta = float(delta)
        self.max_pairs = max_pairs
        self.warn_after = warn_after
        self.stall_tolerance = stall_tolerance
        self.batch_size = batch_size
        self.max_length = max_length
        self._loading = {
            "dtype": dtype,
            "device": device,
            "device_map": device_map,
            "trust_remote_code": trust_remote_code,
        }

        # ε is chosen per domain; samples without domains are one domain, reported as "all" only
        self._domains = np.array([s.domain for s in self.samples])
        self._eps_groups = sorted(set(self._domains.tolist()))
        self._by_domain = self._eps_groups != [DEFAULT_DOMAIN]
        everything = np.arange(len(self.samples))
        self._scopes = {ALL: everything}
        if self._by_domain:
            self._scopes.update({d: np.flatnonzero(self._domains == d) for d in self._eps_groups})
        self.epsilon = self._check_epsilon(epsilon)
        self._control = np.isin(self._domains, list(control_domains))

        self.steps: list[int] = []
        self._previous: NDArray[np.float32] | None = None  # routing at the last checkpoint
        self.history: list[dict[str, float]] = []
        self._losses: list[NDArray[np.float64]] = []

    def _check_epsilon(
        self, epsilon: float | Mapping[str, float] | str
    ) -> dict[str, float] | Literal["auto"]:
        """Validate ε and return it as "auto" or a mapping ε-group -> ε."""
        expected = '"auto", a positive float, or a mapping domain -> positive float'
        if isinstance(epsilon, str):
            if epsilon != "auto":
                raise invalid_parameter("PathwayMonitor", "epsilon", expected, epsilon)
            return "auto"
        values = (
            epsilon if isinstance(epsilon, Mapping) else dict.fromkeys(self._eps_groups, epsilon)
        )
        missing = sorted(set(self._eps_groups) - set(values))
        if missing:
            raise InputError(
                f"The 'epsilon' parameter of PathwayMonitor has no value for domain(s) {missing}; "
                f"give one per domain of the samples: {self._eps_groups}."
            )
        for value in values.values():
            if not (is_real(value) and math.isfinite(value) and value > 0):
                raise invalid_parameter("PathwayMonitor", "epsilon", expected, epsilon)
        return {group: float(values[group]) for group in self._eps_groups}

    @property
    def losses(self) -> NDArray[np.float64]:
        """Per-sample loss at each checkpoint seen so far, of shape (N, T)."""
        if not self._losses:
            return np.empty((len(self.samples), 0))
        return np.stack(self._losses, axis=1)

    def on_checkpoint(self, model: Any, step: int) -> dict[str, float]:
        """Capture the probe set with ``model`` at training ``step``, log the metrics, return them.

        The model is put in eval mode for the capture; every module's train/eval mode is restored
        afterwards.

        Parameters
        ----------
        model : transformers MoE causal LM, or a checkpoint directory or ``REPO@REVISION``
            The model being trained, as it is at ``step``; or its saved checkpoint, loaded with
            the monitor's ``dtype`` and ``device``.
        step : int
            Training step of the checkpoint; larger than every step seen before.

        Returns
        -------
        record : dict
            Metric name -> value, e.g. ``"distance/all"``, ``"distance_memorized/math"``,
            ``"memorized_fraction/all"``, ``"churn/all"``, ``"warning/all"``, ``"monitor/seconds"``. NaN where a
            metric is undefined (an empty memorized group; consistency of every sample NaN).
        """
        if not is_int(step):
            raise invalid_parameter("PathwayMonitor.on_checkpoint", "step", "an int", step)
        if self.steps and step <= self.steps[-1]:
            raise invalid_parameter(
                "PathwayMonitor.on_checkpoint",
                "step",
                f"larger than the last monitored step {self.steps[-1]}",
                step,
            )
        start = time.perf_counter()
        if isinstance(model, str | os.PathLike):
            model, self.tokenizer = load_model(
                model, self.tokenizer, func="PathwayMonitor.on_checkpoint", **self._loading
            )
        modes = {module: module.training for module in model.modules()}
        model.eval()
        try:
            result = capture(
                model,
                self.samples,
                self.tokenizer,
                batch_size=self.batch_size,
                max_length=self.max_length,
            )
        finally:
            for module, training in modes.items():
                module.training = training
        self.steps.append(int(step))
        self._losses.append(np.asarray(result.loss, dtype=np.float64))
        record = self._metrics(result)
        record["monitor/seconds"] = time.perf_counter() - start
        self.history.append({"step": int(step), **record})
        for sink in self.sinks:
            sink.log(record, int(step))
        return record

    def _memorized(self) -> tuple[NDArray[np.bool_], dict[str, float], NDArray[np.float64]]:
        """Which probe samples are memorized before the latest checkpoint, the ε of each group,
        and each sample's δ."""
        steps = np.asarray(self.steps)
        if len(steps) < 2:  # nothing can be memorized *before* the only checkpoint
            eps = (
                dict.fromkeys(self._eps_groups, math.nan)
                if self.epsilon == "auto"
                else self.epsilon
            )
            none = np.zeros(len(self.samples), dtype=bool)
            return none, eps, np.full(len(self.samples), self.delta)
        onsets, epsilons = memorization_table(
            self.losses, steps, self._domains.tolist(), epsilon=self.epsilon, delta=self.delta
        )
        onset = onsets["mem_onset"].to_numpy()
        eps = dict(zip(epsilons["domain"].to_list(), epsilons["epsilon"].to_list(), strict=True))
        delta_of = dict(zip(epsilons["domain"].to_list(), epsilons["delta"].to_list(), strict=True))
        deltas = np.array([delta_of[d] for d in self._domains.tolist()], dtype=np.float64)
        return (onset != NEVER) & (onset < steps[-1]), eps, deltas

    def _metrics(self, result: Capture) -> dict[str, float]:
        """The record of one checkpoint from its capture and the loss history."""
        memorized, eps, deltas = self._memorized()
        paths = pathways(result.mean_weights, self.threshold)
        routes = consistency_metrics(result.mean_weights, result.router_weights)
        churn = moved = np.full(len(self.samples), np.nan)
        if self._previous is not None and len(self._losses) >= 2:
            churn = routing_churn(self._previous, result.mean_weights)
            moved = np.abs(self._losses[-1] - self._losses[-2])
        self._previous = np.asarray(result.mean_weights)
        control = np.flatnonzero(self._control & memorized)
        control_churn = group_churn(churn[control], moved[control], deltas[control])[0]
        record: dict[str, float] = {}
        for scope, index in self._scopes.items():
            held = index[memorized[index]]
            record[f"churn/{scope}"] = group_churn(churn[held], moved[held], deltas[held])[0]
            if self._control.any():
                record[f"churn_excess/{scope}"] = record[f"churn/{scope}"] - control_churn
            distance_memorized = self._distance(paths[held])
            record[f"loss/{scope}"] = float(np.mean(result.loss[index], dtype=np.float64))
            record[f"distance/{scope}"] = self._distance(paths[index])
            record[f"distance_memorized/{scope}"] = distance_memorized
            record[f"memorized_fraction/{scope}"] = float(memorized[index].mean())
            eps_key = scope if self._by_domain else DEFAULT_DOMAIN
            if eps_key in eps:
                record[f"epsilon/{scope}"] = eps[eps_key]
            record[f"consistency/{scope}"] = _nanmean(routes.consistency[index])
            record[f"smoothness/{scope}"] = _nanmean(routes.smoothness[index])
            record[f"adjacent_cosine/{scope}"] = _nanmean(routes.adjacent_cosine[index])
            record[f"consistency_nan/{scope}"] = float(np.isnan(routes.consistency[index]).sum())
            stalled = self._check_stalled(scope, distance_memorized)
            rising = self._check_rising(scope, distance_memorized)
            record[f"stalled/{scope}"] = float(stalled)
            record[f"warning/{scope}"] = float(rising or stalled)
        return record

    def _distance(self, group: Pathways) -> float:
        """Mean pairwise pathway distance of a group (NaN with fewer than two samples)."""
        return mean_pairwise_distance(group, self.unit, max_pairs=self.max_pairs, seed=0)

    def _series(self, scope: str, distance: float) -> list[float]:
        """The memorized distance of ``scope`` at every checkpoint so far, this one last."""
        key = f"distance_memorized/{scope}"
        return [*(record[key] for record in self.history), distance]

    def _check_rising(self, scope: str, distance: float) -> bool:
        """Warn when the memorized distance of ``scope`` has risen ``warn_after`` times in a row."""
        rises = consecutive_rises(self._series(scope, distance))
        if rises < self.warn_after:
            return False
        warnings.warn(
            f"pathwatch: the pathway distance of memorized samples ({scope}) has risen at "
            f"{rises} consecutive checkpoints (now {distance:.4g} at step {self.steps[-1]}): "
            "memorized samples are diverging instead of generalizing.",
            MonitorWarning,
            stacklevel=4,
        )
        return True

    def _check_stalled(self, scope: str, distance: float) -> bool:
        """Warn when the memorized distance of ``scope`` has stalled ``warn_after`` times in a row."""
        if self.stall_tolerance is None:
            return False
        stalls = consecutive_stalls(self._series(scope, distance), self.stall_tolerance)
        if stalls < self.warn_after:
            return False
        warnings.warn(
            f"pathwatch: the pathway distance of memorized samples ({scope}) has moved by at most "
            f"{self.stall_tolerance:.0%} at {stalls} consecutive checkpoints (now {distance:.4g} "
            f"at step {self.steps[-1]}): the generalization signal has stalled (or the domain "
            "has finished generalizing; check its loss).",
            MonitorWarning,
            stacklevel=4,
        )
        return True

    def state_dict(self) -> dict[str, Any]:
        """The monitor's memory as plain data, for resuming a run: sample ids, steps, losses, records.

        Returns
        -------
        dict
            ``{"sample_ids": [...], "steps": [...], "losses": (N, T) nested list, "history": [...]}``;
            JSON-serializable (NaN aside, which Python's ``json`` writes and reads).
        """
        return {
            "sample_ids": [sample.id for sample in self.samples],
            "steps": list(self.steps),
            "losses": self.losses.tolist(),
            "history": [dict(record) for record in self.history],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved, so that memorization is judged on the whole run.

        Parameters
        ----------
        state : mapping
            The output of :meth:`state_dict` of a monitor with the same probe set.
        """
        ids = [sample.id for sample in self.samples]
        if state.get("sample_ids") != ids:
            raise InputError(
                "The saved monitor state belongs to another probe set (its sample ids differ from "
                "this monitor's); resume with the samples the run was monitored with."
            )
        steps = [int(step) for step in state["steps"]]
        losses = np.asarray(state["losses"], dtype=np.float64).reshape(len(ids), len(steps))
        if len(state["history"]) != len(steps):
            raise InputError(
                f"The saved monitor state is inconsistent: {len(steps)} steps but "
                f"{len(state['history'])} records."
            )
        self.steps = steps
        self._losses = list(losses.T)
        self._previous = None  # routing is not saved: the first churn after a resume is NaN
        self.history = [dict(record) for record in state["history"]]

    def close(self) -> None:
        """Close every sink."""
        for sink in self.sinks:
            sink.close()

    def __enter__(self) -> PathwayMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def consecutive_rises(values: Sequence[float]) -> int:
    """How many times in a row the series rose at its end (NaN breaks a run).

    Parameters
    ----------
    values : sequence of float, length T
        A metric over checkpoints, oldest first.

    Returns
    -------
    int
        The number of trailing steps t with ``values[t] > values[t - 1]``.

    Examples
    --------
    >>> consecutive_rises([5.0, 3.0, 4.0, 6.0, 7.5]), consecutive_rises([1.0, float("nan"), 2.0])
    (3, 0)
    """
    return _trailing_run(np.diff(np.asarray(values, dtype=np.float64)) > 0)  # NaN compares False


def consecutive_stalls(values: Sequence[float], tolerance: float) -> int:
    """How many times in a row the series stayed within ``tolerance`` (relative) at its end.

    Parameters
    ----------
    values : sequence of float, length T
        A metric over checkpoints, oldest first.
    tolerance : float
        A step t stalls when ``|values[t] - values[t - 1]| <= tolerance * |values[t - 1]|``.

    Returns
    -------
    int
        The number of trailing steps that stalled (NaN breaks a run).

    Examples
    --------
    >>> consecutive_stalls([9.0, 5.0, 5.02, 5.0, 5.01], 0.01), consecutive_stalls([2.0, 2.0], 0.0)
    (3, 1)
    """
    series = np.asarray(values, dtype=np.float64)
    moved = np.abs(np.diff(series))
    return _trailing_run(moved <= tolerance * np.abs(series[:-1]))  # NaN compares False


def _trailing_run(flags: NDArray[np.bool_]) -> int:
    """Length of the run of True values at the end of ``flags``."""
    breaks = np.flatnonzero(~flags)
    return int(flags.size - breaks[-1] - 1) if breaks.size else int(flags.size)


def _nanmean(values: NDArray[np.floating]) -> float:
    """Mean over the non-NaN values; NaN when there are none."""
    finite = values[~np.isnan(values)]
    return float(finite.mean(dtype=np.float64)) if finite.size else float("nan")
