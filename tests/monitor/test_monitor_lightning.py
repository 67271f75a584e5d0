"""A real Lightning run with PathwayLightningCallback logs what the library computes on its checkpoints."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from monitor_oracle import assert_records_match, make_probe, reference_records

from pathwatch.capture import capture
from pathwatch.errors import InputError
from pathwatch.monitor import JSONLSink, PathwayMonitor
from tiny_models import build_tiny_model

EVERY, MAX_STEPS = 5, 15


@pytest.fixture
def pl():
    return pytest.importorskip(
        "lightning.pytorch", reason='needs the extra: pip install "pathwatch[lightning]"'
    )


def _module(pl, model: torch.nn.Module):
    """The smallest LightningModule around a transformers causal LM."""

    class CausalLM(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
            return self.model(input_ids=batch, labels=batch).loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.AdamW(self.parameters(), lr=1e-2)

    return CausalLM()


def _trainer(pl, tmp_path, callback, max_steps=MAX_STEPS):
    checkpoints = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", every_n_train_steps=EVERY, save_top_k=-1, filename="{step}"
    )
    return pl.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[checkpoints, callback],
    )


def test_lightning_callback_logs_the_metrics_of_each_saved_checkpoint(pl, tmp_path):
    from pathwatch.monitor.lightning import PathwayLightningCallback

    probe = make_probe()
    monitor = PathwayMonitor(probe, sinks=[JSONLSink(tmp_path / "m.jsonl")], delta=0.5)
    module = _module(pl, build_tiny_model("olmoe", seed=0).train())
    data = torch.utils.data.DataLoader(torch.tensor([s["input_ids"] for s in probe]), batch_size=4)
    _trainer(pl, tmp_path, PathwayLightningCallback(monitor)).fit(module, data)

    steps = list(range(EVERY, MAX_STEPS + 1, EVERY))
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == steps
    captures = []
    for step in steps:
        state = torch.load(tmp_path / "ckpt" / f"step={step}.ckpt", weights_only=True)["state_dict"]
        model = build_tiny_model("olmoe", seed=0)
        model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
        captures.append(capture(model, probe))
    for row, expected in zip(
        rows, reference_records(captures, steps, probe, delta=0.5), strict=True
    ):
        assert_records_match(
            {k: float("nan") if v is None else v for k, v in row.items()}, expected
        )


def test_lightning_callback_names_a_missing_model_attribute(pl, tmp_path):
    from pathwatch.monitor.lightning import PathwayLightningCallback

    callback = PathwayLightningCallback(PathwayMonitor(make_probe(2)), model_attribute="net")
    module = _module(pl, build_tiny_model("olmoe", seed=0).train())
    data = torch.utils.data.DataLoader(
        torch.tensor([s["input_ids"] for s in make_probe(2)]), batch_size=4
    )
    with pytest.raises(InputError, match="no attribute 'net' on CausalLM; pass model_attribute="):
        _trainer(pl, tmp_path, callback).fit(module, data)


def test_missing_lightning_names_the_pip_command(monkeypatch):
    for name in list(sys.modules):
        if name == "lightning" or name.startswith(("lightning.", "pathwatch.monitor.lightning")):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "lightning", None)
    with pytest.raises(ImportError, match=r'pip install "pathwatch\[lightning\]"'):
        import pathwatch.monitor.lightning  # noqa: F401


def test_a_resumed_lightning_run_restores_the_monitor_history(pl, tmp_path):
    from pathwatch.monitor.lightning import PathwayLightningCallback

    probe = make_probe()
    data = torch.utils.data.DataLoader(torch.tensor([s["input_ids"] for s in probe]), batch_size=4)
    first = PathwayMonitor(probe, delta=0.5)
    module = _module(pl, build_tiny_model("olmoe", seed=0).train())
    _trainer(pl, tmp_path, PathwayLightningCallback(first)).fit(module, data)

    resumed = PathwayMonitor(probe, delta=0.5)
    module = _module(pl, build_tiny_model("olmoe", seed=0).train())
    trainer = _trainer(pl, tmp_path / "again", PathwayLightningCallback(resumed), MAX_STEPS + EVERY)
    trainer.fit(module, data, ckpt_path=tmp_path / "ckpt" / f"step={MAX_STEPS}.ckpt")
    assert resumed.steps == [*first.steps, MAX_STEPS + EVERY]
    np.testing.assert_array_equal(resumed.losses[:, :-1], first.losses)
