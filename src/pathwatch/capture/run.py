"""The capture stage: checkpoints + samples → a resumable run directory (``pathwatch capture``).

:func:`capture_run` checks every input, writes the manifest and the sample table, and fills the run
with one unit per (checkpoint, shard of samples), spread over processes or Ray tasks by
:mod:`pathwatch.distributed`.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pathwatch import __version__
from pathwatch._hf import check_device, load_causal_lm, resolve_dtype
from pathwatch._validate import check_bool, check_instance, check_path
from pathwatch.checkpoints import Checkpoint, resolve_checkpoints
from pathwatch.config import CaptureConfig
from pathwatch.distributed import Unit, launched_processes, run_ray, run_units
from pathwatch.errors import (
    InputError,
    StoreError,
    UnsupportedModelError,
    invalid_parameter,
)
from pathwatch.store import CheckpointData, RunStore
from pathwatch.store.manifest import (
    CheckpointInfo,
    Manifest,
    ModelInfo,
    SamplesInfo,
    Settings,
)

if TYPE_CHECKING:
    from pathwatch.capture.samples import Sample
    from pathwatch.capture.virtual import VirtualExperts

__all__ = ["capture_run"]

# capture()'s own truncation warning, replaced by one warning per capture_run
_CAPTURE_TRUNCATION_WARNING = r"capture: \d+ of \d+ samples were cut to max_length"
# files of which a saved tokenizer has at least one
_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model", "vocab.json")


@dataclass(frozen=True)
class _Checkpoint:
    """A checkpoint that passed validation (a local directory or a hub revision's snapshot)."""

    step: int
    path: Path
    model: ModelInfo
    architecture: dict[str, Any]
    source: Checkpoint

    @property
    def info(self) -> CheckpointInfo:
        """The manifest's entry of this checkpoint."""
        src = self.source
        name = src.label if src.repo else self.path.name
        return CheckpointInfo(self.step, str(self.path), name, src.repo, src.revision, src.commit)


@dataclass(frozen=True)
class _Loading:
    """How the checkpoints are loaded: the resolved dtype and device, device_map, remote code."""

    dtype: str
    device: str
    device_map: str | None
    trust_remote_code: bool

    def load(self, path: Path) -> Any:
        """The checkpoint's model, in eval mode."""
        return load_causal_lm(
            path,
            dtype=self.dtype,
            device=self.device,
            device_map=self.device_map,
            trust_remote_code=self.trust_remote_code,
        )


def _model_info(model: Any, virtual_experts: int | None) -> ModelInfo:
    """The manifest's model entry: the MoE routers, or the MLP layers with K virtual experts."""
    from pathwatch.capture.families import find_routers
    from pathwatch.capture.virtual import FAMILY, dense_mlps

    if virtual_experts is None:
        routers = find_routers(model)
        return ModelInfo(**{**routers.summary(), "moe_layers": routers.layers})
    mlps = dense_mlps(model)
    width = mlps[0].inputs.out_features
    if not 2 <= virtual_experts <= width:
        raise invalid_parameter(
            "capture_run",
            "virtual_experts",
            f"an int in [2, {width}] (the MLP width)",
            virtual_experts,
        )
    return ModelInfo(
        family=FAMILY,
        model_type=str(model.config.get_text_config().model_type),
        n_layers=len(model.get_decoder().layers),
        moe_layers=tuple(mlp.layer for mlp in mlps),
        n_experts=virtual_experts,
        top_k=None,
    )


def _inspect_checkpoint(
    path: Path, virtual_experts: int | None = None, trust_remote_code: bool = False
) -> tuple[ModelInfo, dict[str, Any], object]:
    """Model facts of a checkpoint from its config alone (the model is built on the meta device),
    and the dtype its config states.

    With ``virtual_experts`` K, the MoE layers are the dense model's MLP layers, K experts each.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(
            f"Checkpoint {path}: cannot read its config.json ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); pass a directory written by "
            "save_pretrained."
        ) from exc
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
        info = _model_info(model, virtual_experts)
    except UnsupportedModelError as exc:
        raise UnsupportedModelError(f"Checkpoint {path}: {exc}") from exc
    except ValueError as exc:
        raise UnsupportedModelError(
            f"Checkpoint {path}: model_type {config.model_type!r} is not a causal LM transformers "
            f"can build ({str(exc).splitlines()[0]}); pass a Mixture-of-Experts causal LM."
        ) from exc
    text_config = config.get_text_config()
    architecture = {
        "model_type": info.model_type,
        "layers": info.n_layers,
        "MoE layers": list(info.moe_layers),
        "experts": info.n_experts,
        "top_k": info.top_k,
        "hidden size": text_config.hidden_size,
        "vocabulary size": text_config.vocab_size,
    }
    return info, architecture, getattr(text_config, "dtype", None)


def _check_same_architecture(checkpoints: list[_Checkpoint]) -> None:
    """InputError naming the first checkpoint pair and field whose architectures differ."""
    first = checkpoints[0]
    for other in checkpoints[1:]:
        for key, value in first.architecture.items():
            if other.architecture[key] != value:
                raise InputError(
                    f"Checkpoints {first.path} and {other.path} differ in {key} ({value!r} vs "
                    f"{other.architecture[key]!r}); one run holds checkpoints of one architecture."
                )


def _tokenizer(checkpoints: list[_Checkpoint], trust_remote_code: bool = False) -> Any:
    """The tokenizer saved with the checkpoints; InputError if one is missing or they differ."""
    from transformers import AutoTokenizer

    def load(path: Path) -> Any:
        fix = "save the tokenizer with the checkpoint, or give the samples as 'input_ids'"
        # transformers 5 builds an empty tokenizer for a directory without tokenizer files
        if not any((path / name).is_file() for name in _TOKENIZER_FILES):
            raise InputError(
                f"Checkpoint {path}: cannot load its tokenizer (none of "
                f"{', '.join(_TOKENIZER_FILES)} found); {fix}."
            )
        try:
            return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, TypeError) as exc:
            raise InputError(
                f"Checkpoint {path}: cannot load its tokenizer ({type(exc).__name__}); {fix}."
            ) from exc

    def fingerprint(tokenizer: Any) -> str:
        vocab = sorted(tokenizer.get_vocab().items())
        text = repr((type(tokenizer).__name__, vocab, sorted(tokenizer.special_tokens_map.items())))
        return hashlib.sha256(text.encode()).hexdigest()

    first = load(checkpoints[0].path)
    reference = fingerprint(first)
    for other in checkpoints[1:]:
        if fingerprint(load(other.path)) != reference:
            raise InputError(
                f"Checkpoints {checkpoints[0].path} and {other.path} have different tokenizers "
                "(vocabulary or special tokens); capture checkpoints of one tokenizer into one run."
            )
    return first


def _sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def capture_run(
    checkpoints: Sequence[str | os.PathLike],
    samples_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    config: CaptureConfig | None = None,
    steps: Sequence[int] | None = None,
    revisions: str | None = None,
    local_files_only: bool = False,
    progress: bool = True,
) -> RunStore:
    """Capture per-sample routing and loss of every checkpoint into a resumable run directory.

    All inputs are checked before anything is written. The work is split into units of
    (checkpoint, shard of ``config.shard_size`` samples); each unit is written atomically with a
    checksum, and units that exist and verify are skipped, so a killed capture resumes where it
    stopped and ends bit-identical to an uninterrupted one.

    Parameters
    ----------
    checkpoints : list of checkpoints, one per training step, all of one MoE architecture and
        tokenizer: directories written by ``save_pretrained``, hub checkpoints ``REPO@REVISION``,
        or bare hub repos ``REPO`` expanded by ``revisions`` (:mod:`pathwatch.checkpoints`).
    samples_path : JSONL or Parquet file with ``text`` (or ``input_ids``), optional ``id``, ``domain``.
    out : run directory, new or empty, or a run of this same capture to resume.
    config : CaptureConfig, optional
        Batch size, max length, shard size, router weighting, virtual experts and the backend that
        spreads the units (:class:`pathwatch.config.CaptureConfig`; its defaults when None). With
        ``virtual_experts`` K, *dense* checkpoints are captured through K virtual experts per MLP
        layer (:mod:`pathwatch.capture.virtual`): the clusters are fitted on the first checkpoint,
        stored as ``RUN/virtual_experts.safetensors`` and reused for every checkpoint (and on
        resume). Workers, local or Ray, claim units one by one, so overlapping launches never
        write the same unit and the result is identical to a single-process capture.
    steps : training step of each checkpoint; default: the step each directory name states
        (``step-1000``, ``checkpoint-1000``; see :mod:`pathwatch.steps`).
    progress : show a progress bar over units on stderr.

    Returns
    -------
    RunStore
        The complete run: ``missing_units()`` is empty.

    Raises
    ------
    InputError
        A missing or unreadable path, an unparseable step, bad samples, checkpoints that disagree
        on architecture or tokenizer, or a run directory made from other inputs.
    UnsupportedModelError
        A checkpoint is not a Mixture-of-Experts model (and no ``virtual_experts``), or has no dense
        MLPs for virtual experts.
    StoreError
        The run directory cannot be written (e.g. the disk is full).

    Examples
    --------
    >>> store = capture_run(["ckpt/step-100", "ckpt/step-200"], "samples.jsonl", "runs/a")  # doctest: +SKIP
    >>> store.load_checkpoint(200).mean_weights.shape  # doctest: +SKIP
    (1000, 16, 64)
    """
    config = check_instance("capture_run", "config", config, CaptureConfig, allow_none=True)
    config = config or CaptureConfig()
    samples_file = check_path("capture_run", "samples_path", samples_path)
    out = check_path("capture_run", "out", out)
    check_bool("capture_run", "progress", progress)
    sources = resolve_checkpoints(
        checkpoints,
        steps=steps,
        revisions=revisions,
        local_files_only=local_files_only,
        func="capture_run",
    )
    plan = _plan(sources, samples_file, config)
    store = RunStore.resume(out, plan.manifest)
    processes = launched_processes()
    if config.backend == "ray" and processes.size > 1:
        raise InputError(
            "--backend ray spreads the units itself; run it without `accelerate launch`."
        )
    # every input is valid: writing starts here
    alone = config.backend == "local" and processes.size == 1
    with RunStore.lock(out, shared=not alone):
        if processes.is_main:  # the run's shared files; units are claimed one by one
            _write_shared_files(store or RunStore.create(out, plan.manifest), plan, clean=alone)
        processes.wait()
        store = RunStore(out)
        experts = (
            _virtual_experts(store, plan.ckpts[0], plan.loading) if config.virtual_experts else None
        )
        worker = _UnitCapturer(plan.ckpts, plan.samples, plan.tokenizer, experts, plan.loading)
        show = progress and processes.is_main
        if config.backend == "ray":
            run_ray(store, worker, address=config.ray_address, progress=show)
        else:
            run_units(store, worker, rank=processes.rank, size=processes.size, progress=show)
    return store


@dataclass(frozen=True)
class _Plan:
    """A validated capture: its checkpoints, samples, tokenizer and the manifest it writes."""

    ckpts: tuple[_Checkpoint, ...]
    samples: list[Sample]
    tokenizer: Any
    manifest: Manifest
    virtual_experts: int | None
    loading: _Loading


def _plan(sources: list[Checkpoint], samples_file: Path, config: CaptureConfig) -> _Plan:
    """Check every input (device, samples, then each checkpoint's config and tokenizer, the dtype
    the device runs); writes nothing."""
    from pathwatch.capture.samples import encode_samples, read_samples

    device = check_device("capture_run", config.device, config.device_map)
    samples = read_samples(samples_file)
    ckpts, own_dtypes = [], []
    for src in sorted(sources, key=lambda c: c.step):
        info, architecture, own = _inspect_checkpoint(
            src.path, config.virtual_experts, config.trust_remote_code
        )
        ckpts.append(_Checkpoint(src.step, src.path, info, architecture, src))
        own_dtypes.append(own)
    _check_same_architecture(ckpts)
    loading = _Loading(
        resolve_dtype("capture_run", config.dtype, own_dtypes[0], device),
        device,
        config.device_map,
        config.trust_remote_code,
    )
    tokenizer = (
        _tokenizer(ckpts, config.trust_remote_code)
        if any(s.text is not None for s in samples)
        else None
    )
    try:
        encoded = encode_samples(
            samples,
            tokenizer,
            max_length=config.max_length,
            vocab_size=ckpts[0].architecture["vocabulary size"],
        )
    except InputError as exc:
        raise InputError(f"{samples_file}: {exc}") from exc
    if encoded.truncated.any():  # one warning here instead of one per unit from capture()
        warnings.warn(
            f"capture_run: {int(encoded.truncated.sum())} of {len(samples)} samples of "
            f"{samples_file} are longer than max_length={config.max_length} tokens and are cut "
            "(stored per sample as 'truncated').",
            stacklevel=3,
        )
    manifest = Manifest(
        model=ckpts[0].model,
        checkpoints=tuple(c.info for c in ckpts),
        samples=SamplesInfo(
            str(samples_file.resolve()), _sha256(samples_file), len(samples), config.shard_size
        ),
        settings=Settings(
            batch_size=config.batch_size,
            max_length=config.max_length,
            weights=config.weights,
            dtype=loading.dtype,
        ),
        pathwatch_version=__version__,
    )
    return _Plan(tuple(ckpts), samples, tokenizer, manifest, config.virtual_experts, loading)


def _write_shared_files(store: RunStore, plan: _Plan, *, clean: bool) -> None:
    """The files every unit relies on: sample table and virtual experts; ``clean``: drop the
    temporaries of a killed single-process capture (under a shared lock, other workers' are in
    flight)."""
    try:
        store.samples()
    except StoreError:  # absent or damaged: a previous capture stopped before writing it
        store.write_samples(_sample_table(plan.samples))
    if clean:
        store.remove_temporaries()
    if plan.virtual_experts is not None:
        _virtual_experts(store, plan.ckpts[0], plan.loading)


def _virtual_experts(store: RunStore, first: _Checkpoint, loading: _Loading) -> VirtualExperts:
    """The run's virtual experts: read back, or fitted on its first checkpoint and written once."""
    from pathwatch.capture.virtual import (
        FILE,
        fit_virtual_experts,
        read_virtual_experts,
        write_virtual_experts,
    )

    if (store.path / FILE).is_file():
        return read_virtual_experts(store)
    experts = fit_virtual_experts(loading.load(first.path), store.manifest.model.n_experts)
    write_virtual_experts(store, experts)
    return experts


def _sample_table(samples: list[Sample]) -> Any:
    """``samples.parquet``: sample_index, id, domain, text (null for token ids) in capture order."""
    import polars as pl

    return pl.DataFrame(
        {
            "sample_index": range(len(samples)),
            "id": [s.id for s in samples],
            "domain": [s.domain for s in samples],
            "text": [s.text for s in samples],
        },
        schema={"sample_index": pl.Int64, "id": pl.String, "domain": pl.String, "text": pl.String},
    )


def _capture_shard(
    model: Any,
    ckpt: _Checkpoint,
    samples: list[Sample],
    bounds: tuple[int, int],
    tokenizer: Any,
    settings: Settings,
    experts: VirtualExperts | None,
) -> CheckpointData:
    """Capture samples ``[start, stop)`` with one checkpoint's model; errors name the checkpoint."""
    from pathwatch.capture import capture

    start, stop = bounds
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_CAPTURE_TRUNCATION_WARNING)
            result = capture(
                model,
                samples[start:stop],
                tokenizer,
                batch_size=settings.batch_size,
                max_length=settings.max_length,
                virtual_experts=experts,
                weights=settings.weights,
            )
    except InputError as exc:  # e.g. NaN weights: say which checkpoint and samples
        raise type(exc)(
            f"Checkpoint {ckpt.path} (step {ckpt.step}), samples {start}..{stop - 1}: {exc}"
        ) from exc
    return CheckpointData(result.mean_weights, result.loss, result.n_tokens, result.truncated)


class _UnitCapturer:
    """Captures and writes one unit of a run at a time, keeping the last checkpoint's model loaded.

    Picklable (before its first call), so Ray can ship it to its workers. With virtual ``experts``,
    the router weights are their expert embeddings.
    """

    def __init__(
        self,
        ckpts: tuple[_Checkpoint, ...],
        samples: list[Sample],
        tokenizer: Any,
        experts: VirtualExperts | None,
        loading: _Loading,
    ) -> None:
        self.ckpts = {c.step: c for c in ckpts}
        self.samples = samples
        self.tokenizer = tokenizer
        self.experts = experts
        self.loading = loading
        self._loaded: tuple[int, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_loaded": None}

    def _model(self, step: int) -> Any:
        if self._loaded is None or self._loaded[0] != step:
            self._loaded = None  # free the previous model before loading the next
            self._loaded = (step, self.loading.load(self.ckpts[step].path))
        return self._loaded[1]

    def __call__(self, store: RunStore, unit: Unit) -> int:
        """Capture ``unit`` and write it into ``store``; returns the number of samples captured."""
        from pathwatch.capture.families import find_routers

        model = self._model(unit.step)
        if unit.shard is None:
            weights = (
                find_routers(model).weights()
                if self.experts is None
                else self.experts.router_weights(model)
            )
            store.write_router_weights(unit.step, weights)
            return 0
        bounds = store.manifest.samples.shard_bounds(unit.shard)
        data = _capture_shard(
            model,
            self.ckpts[unit.step],
            self.samples,
            bounds,
            self.tokenizer,
            store.manifest.settings,
            self.experts,
        )
        store.write_unit(unit.step, unit.shard, data)
        return bounds[1] - bounds[0]
