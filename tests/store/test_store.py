"""The run store against plain arrays: round trips, verification, atomic writes, missing units."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pathwatch.errors import IntegrityError, StoreError
from pathwatch.store import CheckpointData, RunStore, _io
from pathwatch.store.manifest import (
    CheckpointInfo,
    Manifest,
    ModelInfo,
    SamplesInfo,
    Settings,
)
from pathwatch.store.tables import read_table, write_table
from pathwatch.store.units import unit_path

N, L, E, H = 10, 2, 4, 6


def _manifest(count: int = N, shard_size: int = 4, steps: tuple[int, ...] = (100, 200)) -> Manifest:
    return Manifest(
        model=ModelInfo("olmoe", "olmoe", 3, (0, 2), E, 2),
        checkpoints=tuple(CheckpointInfo(s, f"/ckpt/step-{s}", f"step-{s}") for s in steps),
        samples=SamplesInfo("samples.jsonl", "ab" * 32, count, shard_size),
        settings=Settings(batch_size=4, max_length=32),
        pathwatch_version="0.1.0",
    )


def _data(rng: np.random.Generator, n: int = N) -> CheckpointData:
    weights = rng.random((n, L, E), dtype=np.float32)
    return CheckpointData(
        mean_weights=weights / weights.sum(-1, keepdims=True),
        loss=rng.random(n, dtype=np.float32),
        n_tokens=rng.integers(1, 50, n),
        truncated=rng.random(n) < 0.3,
    )


def _shard(data: CheckpointData, start: int, stop: int) -> CheckpointData:
    return CheckpointData(
        *(getattr(data, f)[start:stop] for f in CheckpointData.__dataclass_fields__)
    )


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    samples = pl.DataFrame({"sample_index": range(N), "id": [f"s{i}" for i in range(N)]})
    store = RunStore.create(tmp_path / "run", _manifest())
    store.write_samples(samples.with_columns(domain=pl.lit("d")))
    return store


def _fill(store: RunStore, seed: int = 0) -> dict[int, CheckpointData]:
    rng = np.random.default_rng(seed)
    full = {}
    for step in store.steps:
        full[step] = _data(rng)
        for shard in range(store.n_shards):
            store.write_unit(
                step, shard, _shard(full[step], *store.manifest.samples.shard_bounds(shard))
            )
    return full


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(_io.TEMP_SUFFIX)]


def test_manifest_round_trips_through_json(tmp_path: Path) -> None:
    manifest = _manifest()
    manifest.write(tmp_path)
    assert Manifest.read(tmp_path) == manifest
    assert json.loads((tmp_path / "manifest.json").read_text())["samples"]["shard_size"] == 4


_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


@given(
    model=st.builds(
        ModelInfo,
        family=_names,
        model_type=_names,
        n_layers=st.integers(1, 64),
        moe_layers=st.lists(st.integers(0, 63), max_size=8).map(tuple),
        n_experts=st.integers(1, 512),
        top_k=st.none() | st.integers(1, 16),
    ),
    checkpoints=st.lists(
        st.builds(CheckpointInfo, step=st.integers(0, 10**9), path=_names, name=_names), max_size=5
    ).map(tuple),
    samples=st.builds(
        SamplesInfo,
        path=_names,
        sha256=st.text("0123456789abcdef", min_size=64, max_size=64),
        count=st.integers(1, 10**6),
        shard_size=st.integers(1, 10**4),
    ),
    settings_=st.builds(Settings, batch_size=st.integers(1, 512), max_length=st.integers(1, 10**5)),
)
@settings(suppress_health_check=[HealthCheck.too_slow])  # generation is slow on a loaded machine
def test_any_manifest_round_trips(model, checkpoints, samples, settings_) -> None:
    manifest = Manifest(model, checkpoints, samples, settings_, pathwatch_version="0.1.0")
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert manifest.first_difference(Manifest.from_json(manifest.to_json())) is None


@pytest.mark.parametrize(
    ("count", "shard_size", "bounds"),
    [(10, 4, [(0, 4), (4, 8), (8, 10)]), (8, 4, [(0, 4), (4, 8)]), (3, 1024, [(0, 3)])],
)
def test_shards_partition_the_samples(count: int, shard_size: int, bounds: list) -> None:
    info = _manifest(count, shard_size).samples
    assert [info.shard_bounds(s) for s in range(info.n_shards)] == bounds


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda raw: raw.pop("samples"), IntegrityError),
        (lambda raw: raw["model"].update(extra=1), IntegrityError),
        (lambda raw: raw.update(format_version=99), StoreError),
    ],
)
def test_bad_manifest_is_a_one_line_store_error(tmp_path: Path, edit, error) -> None:
    raw = json.loads(_manifest().to_json())
    edit(raw)
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(error, match=r"manifest\.json") as info:
        RunStore(tmp_path)
    assert "\n" not in str(info.value)


def test_missing_manifest_says_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a pathwatch run"):
        RunStore(tmp_path)


def test_first_difference_names_the_field() -> None:
    a, b = _manifest(), _manifest(shard_size=5)
    assert a.first_difference(a) is None
    assert a.first_difference(b) == ("samples.shard_size", 4, 5)


def test_units_round_trip_and_concatenate_in_sample_order(store: RunStore) -> None:
    full = _fill(store)
    assert store.missing_units() == []
    for step, expected in full.items():
        got = store.load_checkpoint(step)
        for name in CheckpointData.__dataclass_fields__:
            np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))
        assert got.mean_weights.dtype == np.float32 and got.truncated.dtype == bool
    assert _temporaries(store.path) == []


def test_missing_units_lists_absent_units_in_capture_order(store: RunStore) -> None:
    assert store.missing_units() == [(s, k) for s in (100, 200) for k in range(3)]
    store.write_unit(200, 1, _data(np.random.default_rng(0), 4))
    assert (200, 1) not in store.missing_units() and len(store.missing_units()) == 5
    with pytest.raises(StoreError, match=r"step 200 is incomplete \(2 of 3 shards missing\)"):
        store.load_checkpoint(200)


def test_unit_of_wrong_size_is_refused(store: RunStore) -> None:
    with pytest.raises(StoreError, match="must hold 2 samples, got 4"):
        store.write_unit(100, 2, _data(np.random.default_rng(0), 4))


def test_unknown_step_names_the_valid_steps(store: RunStore) -> None:
    with pytest.raises(StoreError, match=r"Steps of this run: \[100, 200\]"):
        store.load_checkpoint(150)


def test_truncated_unit_is_detected(store: RunStore) -> None:
    _fill(store)
    path = unit_path(store.path, 200, 1)
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(IntegrityError, match="shard-00001"):
        store.read_unit(200, 1)
    assert store.missing_units() == [(200, 1)]
    with pytest.raises(IntegrityError, match="shard-00001"):
        store.load_checkpoint(200)


def test_unit_copied_to_another_place_is_detected(store: RunStore) -> None:
    _fill(store)
    unit_path(store.path, 100, 0).write_bytes(unit_path(store.path, 200, 0).read_bytes())
    with pytest.raises(IntegrityError, match="metadata 'step' is '200', expected '100'"):
        store.read_unit(100, 0)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(position=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_any_flipped_bit_is_detected(store: RunStore, position: float, bit: int) -> None:
    _fill(store)
    path = unit_path(store.path, 100, 0)
    data = bytearray(path.read_bytes())
    data[int(position * len(data))] ^= 1 << bit
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        store.read_unit(100, 0)


def test_router_weights_round_trip_keyed_by_true_layer(store: RunStore) -> None:
    rng = np.random.default_rng(1)
    weights = [rng.standard_normal((E, H)).astype(np.float32) for _ in range(L)]
    assert not store.has_router_weights(100)
    store.write_router_weights(100, weights)
    for got, expected in zip(store.router_weights(100), weights, strict=True):
        np.testing.assert_array_equal(got, expected)
    from safetensors.numpy import load_file

    assert sorted(load_file(store.path / "routers" / "step-00000100.safetensors")) == [
        "layer_0",
        "layer_2",
    ]


def test_samples_table_round_trips(store: RunStore) -> None:
    assert store.samples().columns == ["sample_index", "id", "domain"]
    assert store.samples()["id"].to_list() == [f"s{i}" for i in range(N)]


def test_tables_round_trip_and_corrupt_table_is_integrity_error(store: RunStore) -> None:
    frame = pl.DataFrame({"step": [1, 2], "distance": [0.5, 0.25]})
    store.write_table("group_metrics", frame)
    assert store.read_table("group_metrics").equals(frame)
    store.table_path("group_metrics").write_bytes(b"not parquet")
    with pytest.raises(IntegrityError, match=r"group_metrics\.parquet"):
        store.read_table("group_metrics")
    with pytest.raises(StoreError, match="missing"):
        read_table(store.path / "absent.parquet")


def test_replace_tables_leaves_exactly_the_new_set(
    store: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = {"matches": pl.DataFrame({"a": [1]}), "accuracy": pl.DataFrame({"b": [2]})}
    store.replace_tables(old)
    new = {"accuracy": pl.DataFrame({"b": [3]})}
    store.replace_tables(new)
    assert sorted(p.name for p in (store.path / "tables").iterdir()) == ["accuracy.parquet"]
    assert store.read_table("accuracy").equals(new["accuracy"]) and not store.has_table("matches")
    # a failed write keeps the whole old set and leaves no half-written set behind
    monkeypatch.setattr(
        _io, "_write_bytes", lambda h, d: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full"))
    )
    with pytest.raises(StoreError, match="free disk space"):
        store.replace_tables(old)
    assert store.read_table("accuracy").equals(new["accuracy"]) and not store.has_table("matches")
    assert sorted(p.name for p in store.path.iterdir() if p.name.startswith(".tables")) == []


def test_replace_tables_recovers_a_swap_killed_between_its_renames(store: RunStore) -> None:
    store.replace_tables({"accuracy": pl.DataFrame({"b": [1]})})
    (store.path / "tables").rename(store.path / ".tables.old")  # killed after the first rename
    store.replace_tables({"onsets": pl.DataFrame({"c": [1]})})
    assert sorted(p.name for p in (store.path / "tables").iterdir()) == ["onsets.parquet"]
    assert not (store.path / ".tables.old").exists()


@pytest.mark.parametrize(
    ("code", "fix"),
    [(errno.ENOSPC, "free disk space"), (errno.EACCES, "writable")],
)
def test_failed_write_is_one_line_and_leaves_nothing(
    store: RunStore, monkeypatch: pytest.MonkeyPatch, code: int, fix: str
) -> None:
    def fail(handle, data):
        handle.write(data[: len(data) // 2])  # part of the bytes reach the disk, then it fails
        raise OSError(code, "simulated")

    monkeypatch.setattr(_io, "_write_bytes", fail)
    with pytest.raises(StoreError, match=fix) as info:
        store.write_unit(100, 0, _data(np.random.default_rng(0), 4))
    assert "\n" not in str(info.value) and "shard-00000.safetensors" in str(info.value)
    assert not unit_path(store.path, 100, 0).exists()
    assert _temporaries(store.path) == []
    with pytest.raises(StoreError, match=fix):
        write_table(pl.DataFrame({"a": [1]}), store.path / "t.parquet")
    assert not (store.path / "t.parquet").exists()


def test_failed_rewrite_keeps_the_old_file(
    store: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(store)
    before = unit_path(store.path, 100, 0).read_bytes()
    monkeypatch.setattr(
        _io, "_write_bytes", lambda h, d: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full"))
    )
    with pytest.raises(StoreError):
        store.write_unit(100, 0, _data(np.random.default_rng(5), 4))
    assert unit_path(store.path, 100, 0).read_bytes() == before


def test_remove_temporaries_removes_only_temporaries(store: RunStore) -> None:
    _fill(store)
    stale = unit_path(store.path, 100, 0).parent / ".shard-00000.safetensors.abc123.tmp"
    stale.write_bytes(b"half")
    assert _io.remove_temporaries(store.path) == 1
    assert _temporaries(store.path) == [] and store.missing_units() == []


def test_claim_is_exclusive_released_by_a_killed_holder_and_clears_its_temporaries(
    store: RunStore,
) -> None:
    import signal
    import subprocess
    import sys

    target = unit_path(store.path, 100, 1)
    holder_code = (
        "import sys, time; from pathlib import Path; from pathwatch.store._io import claim\n"
        "with claim(Path(sys.argv[1]), Path(sys.argv[2]), wait=False) as held:\n"
        "    print(held, flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_code, str(store.path), str(target)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "True"
        with _io.claim(store.path, target, wait=False) as held:
            assert held is False  # another process holds it
        with _io.claim(store.path, unit_path(store.path, 100, 2), wait=False) as held:
            assert held is True  # claims are per unit
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    target.parent.mkdir(parents=True, exist_ok=True)
    stale = target.parent / f".{target.name}.abc123{_io.TEMP_SUFFIX}"
    other = target.parent / f".shard-00002.safetensors.abc123{_io.TEMP_SUFFIX}"
    stale.write_bytes(b"half")
    other.write_bytes(b"half")
    with _io.claim(store.path, target, wait=False) as held:  # the killed holder released it
        assert held is True
        assert not stale.exists() and other.exists()  # only the claimed file's temporaries


def test_shared_and_exclusive_run_locks_exclude_each_other(tmp_path: Path) -> None:
    with (
        _io.shared_lock(tmp_path),
        _io.shared_lock(tmp_path),  # workers of distributed captures share the run
        pytest.raises(StoreError, match="another pathwatch process is writing this run"),
        _io.exclusive_lock(tmp_path),
    ):
        pass
    with (
        _io.exclusive_lock(tmp_path),
        pytest.raises(StoreError, match="a single-process pathwatch capture is writing this run"),
        _io.shared_lock(tmp_path),
    ):
        pass
