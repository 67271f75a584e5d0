"""The monitor tests' probe set, and the offline oracle the monitor must equal."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from pathwatch.capture import Capture
from pathwatch.dynamics.onsets import auto_epsilon
from pathwatch.metrics import consistency, mean_pairwise_distance, pathways, smoothness
from pathwatch.metrics.churn import group_churn, routing_churn
from pathwatch.metrics.consistency import adjacent_cosine
from tiny_models import VOCAB

DOMAINS = ("alpha", "beta")
SEQ_LEN = 12


def make_probe(n_per_domain: int = 6, seed: int = 0) -> list[dict]:
    """Token-id samples of two domains (ids 3.. so that none is a special token)."""
    rng = np.random.default_rng(seed)
    return [
        {"input_ids": rng.integers(3, VOCAB, SEQ_LEN).tolist(), "domain": d, "id": f"{d}-{i}"}
        for d in DOMAINS
        for i in range(n_per_domain)
    ]


def _memorized_before_last(losses: np.ndarray, eps: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """SPEC's rule read literally, T the last column: some t* < T from which every checkpoint holds."""
    n, t_last = losses.shape[0], losses.shape[1] - 1

    def holds(i: int, t: int) -> bool:
        return losses[i, t] <= eps[i] and abs(losses[i, t] - losses[i, t_last]) <= delta[i]

    return np.array(
        [
            any(all(holds(i, t) for t in range(start, t_last + 1)) for start in range(t_last))
            for i in range(n)
        ]
    )


def reference_records(
    captures: list[Capture],
    steps: list[int],
    probe: list[dict],
    *,
    threshold: float = 0.7,
    unit: str = "char",
    delta: float = 0.05,
    epsilon: float | None = None,
    controls: tuple[str, ...] = ("facts",),
) -> list[dict[str, float]]:
    """What the monitor must log, from the library functions called one by one.

    ``epsilon`` None is the monitor's ``"auto"``. Samples without ``domain`` are reported as "all".
    """
    domains = np.array([s.get("domain", "all") for s in probe])
    groups = sorted(set(domains))
    scopes = ["all"] if groups == ["all"] else ["all", *groups]
    losses = np.stack([c.loss for c in captures], axis=1).astype(np.float64)
    records = []
    for t, cap in enumerate(captures):
        seen = losses[:, : t + 1]
        deltas = dict.fromkeys(groups, delta)
        if epsilon is not None:
            eps = dict.fromkeys(groups, epsilon)
        elif t == 0:
            eps = dict.fromkeys(groups, math.nan)
        else:
            choices = {
                d: auto_epsilon(seen[domains == d], steps[: t + 1], delta=delta) for d in groups
            }
            eps = {d: c.epsilon for d, c in choices.items()}
            deltas = {d: c.delta for d, c in choices.items()}  # δ scaled below the 0.1 grid
        delta_of = np.array([deltas[d] for d in domains])
        if t == 0:
            memorized = np.zeros(len(probe), dtype=bool)
        else:
            memorized = _memorized_before_last(seen, np.array([eps[d] for d in domains]), delta_of)
        paths = pathways(cap.mean_weights, threshold)
        cons = consistency(cap.mean_weights, cap.router_weights)
        smooth = smoothness(cap.mean_weights, cap.router_weights)
        adjacent = adjacent_cosine(cap.mean_weights, cap.router_weights)
        churn = moved = np.full(len(probe), np.nan)
        if t:
            churn = routing_churn(captures[t - 1].mean_weights, cap.mean_weights)
            moved = np.abs(losses[:, t] - losses[:, t - 1])
        control = np.flatnonzero(np.isin(domains, controls) & memorized)
        control_churn = group_churn(churn[control], moved[control], delta_of[control])[0]
        record = {}
        for scope in scopes:
            index = np.flatnonzero((domains == scope) | (scope == "all"))
            held = index[memorized[index]]
            record[f"churn/{scope}"] = group_churn(churn[held], moved[held], delta_of[held])[0]
            if np.isin(domains, controls).any():
                record[f"churn_excess/{scope}"] = record[f"churn/{scope}"] - control_churn
            record[f"loss/{scope}"] = float(np.mean(cap.loss[index].astype(np.float64)))
            record[f"distance/{scope}"] = mean_pairwise_distance(paths[index], unit)
            record[f"distance_memorized/{scope}"] = mean_pairwise_distance(paths[held], unit)
            record[f"memorized_fraction/{scope}"] = float(memorized[index].mean())
            if scope in eps:
                record[f"epsilon/{scope}"] = eps[scope]
            with warnings.catch_warnings():  # the mean of an all-NaN group is NaN, silently
                warnings.simplefilter("ignore", RuntimeWarning)
                record[f"consistency/{scope}"] = float(np.nanmean(cons[index]))
                record[f"smoothness/{scope}"] = float(np.nanmean(smooth[index]))
                record[f"adjacent_cosine/{scope}"] = float(np.nanmean(adjacent[index]))
            record[f"consistency_nan/{scope}"] = float(np.isnan(cons[index]).sum())
        records.append(record)
    return records


def assert_records_match(got: dict, want: dict, *, rel: float = 1e-6) -> None:
    """Every metric of ``want`` equals ``got`` within ``rel`` (NaN equals NaN)."""
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=rel, abs=1e-6, nan_ok=True), key
