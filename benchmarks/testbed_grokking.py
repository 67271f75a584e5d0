"""Measure when each testbed domain memorizes and groks, for one configuration and seed.

Usage: python benchmarks/testbed_grokking.py OUT_DIR --seed 0 [field=value ...]
(fields of TestbedConfig, e.g. num_layers=4 train_fraction=0.6). Prints one JSON line: per domain the
first checkpoint (step, CPU seconds) where train accuracy ≥ 0.95 and held-out accuracy crosses 0.5 / 0.9,
and the held-out accuracy at the moment train accuracy reached 0.95.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from pathwatch.testbed.train import TestbedConfig, train_testbed


def _parse(field: dataclasses.Field, text: str) -> object:
    if field.name == "domains":
        return tuple(text.split(","))
    if text == "None":
        return None
    return {int: int, float: float}.get(type(field.default), float)(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true", help="show the training bar on stderr")
    parser.add_argument("overrides", nargs="*", help="TestbedConfig field=value")
    args = parser.parse_intermixed_args()
    fields = {f.name: f for f in dataclasses.fields(TestbedConfig)}
    changes = {}
    for item in args.overrides:
        key, value = item.split("=", 1)
        changes[key] = _parse(fields[key], value)
    config = dataclasses.replace(TestbedConfig(), **changes)
    run = train_testbed(args.out_dir, config=config, seed=args.seed, progress=args.progress)
    result = {
        "seed": args.seed,
        "overrides": changes,
        "seconds": round(run.train_seconds, 1),
        "cpu_seconds": round(run.cpu_seconds, 1),
        "last_step": run.steps[-1],
    }
    for domain in config.domains:
        rows = [c for c in run.curves if c["domain"] == domain]
        mem = _first(rows, "train_accuracy", 0.95)
        result[domain] = {
            "train95": mem and (mem["step"], round(mem["cpu_seconds"])),
            "held_at_train95": mem and round(mem["heldout_accuracy"], 3),
            **{
                f"held{round(100 * level)}": (r["step"], round(r["cpu_seconds"])) if r else None
                for level in (0.5, 0.9)
                for r in [_first(rows, "heldout_accuracy", level)]
            },
            "final": round(rows[-1]["heldout_accuracy"], 3),
        }
    print(json.dumps(result))


def _first(rows: list[dict], key: str, level: float) -> dict | None:
    """The first checkpoint record where ``key`` reaches ``level``."""
    return next((r for r in rows if r[key] >= level), None)


if __name__ == "__main__":
    main()
