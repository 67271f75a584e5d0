"""The run manifest: what a run directory holds and how it was made, as a frozen dataclass ⇄ JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from pathwatch.errors import IntegrityError, StoreError
from pathwatch.store._io import store_error, write_atomic

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class ModelInfo:
    """The architecture every checkpoint of the run shares."""

    family: str
    model_type: str
    n_layers: int
    moe_layers: tuple[int, ...]
    n_experts: int
    top_k: int | None


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint: its training step, its directory, and the directory's name; for a hub
    checkpoint also its repo, revision and the commit that revision resolved to."""

    step: int
    path: str
    name: str
    repo: str | None = None
    revision: str | None = None
    commit: str | None = None


@dataclass(frozen=True)
class SamplesInfo:
    """The sample file, its content hash, its size, and how it is split into shards."""

    path: str
    sha256: str
    count: int
    shard_size: int

    @property
    def n_shards(self) -> int:
        """Number of shards, the last one possibly short."""
        return -(-self.count // self.shard_size)

    def shard_bounds(self, shard: int) -> tuple[int, int]:
        """Half-open range ``[start, stop)`` of the sample indices in ``shard``."""
        start = shard * self.shard_size
        return start, min(start + self.shard_size, self.count)


@dataclass(frozen=True)
class Settings:
    """Capture settings that change the stored numbers.

    ``weights`` is the router weighting averaged per sample: ``"softmax"`` (every expert's
    probability) or ``"topk"`` (only the top-k experts', renormalized per token). ``dtype`` is the
    dtype the model ran in (its reductions are float32 whatever it is).
    """

    batch_size: int
    max_length: int
    weights: str = "softmax"
    dtype: str = "float32"


@dataclass(frozen=True)
class Manifest:
    """Everything needed to tell whether a run directory belongs to a given capture.

    Examples
    --------
    >>> m = Manifest(
    ...     model=ModelInfo("olmoe", "olmoe", 2, (0, 1), 4, 2),
    ...     checkpoints=(CheckpointInfo(100, "/ckpt/step-100", "step-100"),),
    ...     samples=SamplesInfo("s.jsonl", "ab" * 32, 10, 4),
    ...     settings=Settings(batch_size=16, max_length=512),
    ... )
    >>> Manifest.from_json(m.to_json()) == m
    True
    >>> m.samples.n_shards
    3
    """

    model: ModelInfo
    checkpoints: tuple[CheckpointInfo, ...]
    samples: SamplesInfo
    settings: Settings
    format_version: int = FORMAT_VERSION
    pathwatch_version: str = ""

    @property
    def steps(self) -> tuple[int, ...]:
        """Checkpoint steps in ascending order."""
        return tuple(c.step for c in self.checkpoints)

    def to_json(self) -> str:
        """The manifest as indented JSON text."""
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str = "manifest") -> Manifest:
        """Parse JSON text written by :meth:`to_json`; IntegrityError names ``source`` if it fails."""
        try:
            raw = json.loads(text)
            version = raw["format_version"]
            if version != FORMAT_VERSION:
                raise StoreError(
                    f"{source}: format_version {version!r} is not supported by this pathwatch "
                    f"(reads {FORMAT_VERSION}). Re-run the capture with this version."
                )
            return cls(
                model=_build(ModelInfo, raw["model"], moe_layers=tuple(raw["model"]["moe_layers"])),
                # runs captured before hub checkpoints and dtypes existed: local, float32, softmax
                checkpoints=tuple(
                    _build(CheckpointInfo, dict.fromkeys(("repo", "revision", "commit")) | c)
                    for c in raw["checkpoints"]
                ),
                samples=_build(SamplesInfo, raw["samples"]),
                settings=_build(
                    Settings, {"weights": "softmax", "dtype": "float32"} | raw["settings"]
                ),
                format_version=version,
                pathwatch_version=raw["pathwatch_version"],
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(
                f"{source}: not a valid pathwatch manifest ({type(exc).__name__}: {exc}). "
                "Delete the run directory and capture again."
            ) from exc

    def write(self, run_dir: Path) -> None:
        """Write ``run_dir/manifest.json`` atomically."""
        write_atomic(Path(run_dir) / MANIFEST_NAME, self.to_json().encode())

    @classmethod
    def read(cls, run_dir: Path) -> Manifest:
        """Read ``run_dir/manifest.json``; StoreError if the directory is not a run."""
        path = Path(run_dir) / MANIFEST_NAME
        try:
            text = path.read_text()
        except FileNotFoundError as exc:
            raise StoreError(
                f"{run_dir}: not a pathwatch run (no {MANIFEST_NAME}). Create one with "
                "`pathwatch capture --out RUN`."
            ) from exc
        except OSError as exc:
            raise store_error(path, "reading", exc) from exc
        return cls.from_json(text, source=str(path))

    def first_difference(self, other: Manifest) -> tuple[str, Any, Any] | None:
        """The first field (dotted name, value here, value in ``other``) where two captures differ.

        The pathwatch version and the sample file's path are ignored: neither changes the numbers.
        """
        pairs: list[tuple[str, Any, Any]] = [
            ("samples.sha256", self.samples.sha256, other.samples.sha256),
            ("samples.count", self.samples.count, other.samples.count),
            ("samples.shard_size", self.samples.shard_size, other.samples.shard_size),
            ("settings.batch_size", self.settings.batch_size, other.settings.batch_size),
            ("settings.max_length", self.settings.max_length, other.settings.max_length),
            ("settings.weights", self.settings.weights, other.settings.weights),
            ("settings.dtype", self.settings.dtype, other.settings.dtype),
            ("checkpoints.step", list(self.steps), list(other.steps)),
            (
                "checkpoints.path",
                [c.path for c in self.checkpoints],
                [c.path for c in other.checkpoints],
            ),
            (
                "checkpoints.commit",
                [c.commit for c in self.checkpoints],
                [c.commit for c in other.checkpoints],
            ),
        ]
        pairs += [
            (f"model.{f.name}", getattr(self.model, f.name), getattr(other.model, f.name))
            for f in fields(ModelInfo)
        ]
        return next(((n, a, b) for n, a, b in pairs if a != b), None)


def _build(cls: type, raw: dict[str, Any], **override: Any) -> Any:
    """Instantiate a manifest dataclass from its JSON object, ignoring no field and adding none."""
    names = {f.name for f in fields(cls)}
    if set(raw) != names:
        raise KeyError(f"{cls.__name__} fields {sorted(raw)} != {sorted(names)}")
    return cls(**{**raw, **override})
