"""The validation study: its statistics on synthetic series with a known answer, and a reduced run."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from pathwatch.cli import app
from pathwatch.study import DEFAULT_ANALYSIS, StudyConfig, pooled_correlations, study_tables
from pathwatch.testbed import TestbedConfig

SEEDS = range(6)
LEAD = 3  # checkpoints by which the planted routing signal leads accuracy


def _sigmoid(t: np.ndarray, center: float) -> np.ndarray:
    return 1 / (1 + np.exp(-(t - center) / 2.0))


def _synthetic_series() -> pl.DataFrame:
    """add groks (at a seed-dependent checkpoint), facts never does; distance_tracked leads add's
    accuracy by LEAD checkpoints, distance is independent noise, train_loss falls from the start."""
    frames = []
    t = np.arange(40.0)
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        center = 20 + seed
        onset = 4
        for domain in ("add", "facts"):
            if domain == "add":
                accuracy = _sigmoid(t, center) + rng.normal(0, 0.01, t.size)
                tracked = 8 - 4 * _sigmoid(t + LEAD, center) + rng.normal(0, 0.01, t.size)
            else:
                accuracy = 0.02 + rng.normal(0, 0.005, t.size)
                tracked = 6 + 0.05 * t + rng.normal(0, 0.01, t.size)  # keeps rising
            tracked[:onset] = np.nan
            frames.append(
                pl.DataFrame(
                    {
                        "arm": "synthetic",
                        "seed": seed,
                        "analysis": DEFAULT_ANALYSIS,
                        "domain": domain,
                        "step": (100 * t).astype(np.int64),
                        "accuracy": accuracy,
                        "train_accuracy": np.minimum(1.0, t / 5),
                        "distance": rng.normal(size=t.size),
                        "distance_tracked": tracked,
                        "train_loss": np.exp(-t / 5),
                    }
                )
            )
    return pl.concat(frames)


@pytest.fixture(scope="module")
def synthetic():
    config = StudyConfig(arms=(_arm(),), max_lag=5, n_boot=500, detector_run=3, detector_window=1)
    return study_tables(_synthetic_series(), config)


def _arm():
    from pathwatch.study import Arm

    return Arm("synthetic", TestbedConfig.tiny(), tuple(SEEDS))


def test_a_planted_lead_is_recovered_in_every_seed(synthetic):
    lag = synthetic["leadlag"].filter(
        (pl.col("metric") == "distance_tracked") & pl.col("r").is_not_nan()
    )
    best = (
        lag.with_columns(absr=pl.col("r").abs())
        .sort("absr", descending=True)
        .group_by("seed")
        .first()
    )
    assert best.height == len(SEEDS)
    assert best["lag"].to_list() == [LEAD] * len(SEEDS)
    assert set(lag["domain"]) == {"add"}  # facts never crosses: no lead/lag rows


def test_an_independent_metric_gives_cis_that_cover_zero(synthetic):
    pooled = synthetic["pooled"].filter(
        (pl.col("metric") == "distance") & (pl.col("domain") == "grokked")
    )
    row = pooled.row(0, named=True)
    assert row["n_seeds"] == len(SEEDS)
    assert row["r_ci_low"] < 0 < row["r_ci_high"]
    tracked = synthetic["pooled"].filter(
        (pl.col("metric") == "distance_tracked") & (pl.col("domain") == "grokked")
    )
    assert tracked["r_ci_high"][0] < -0.8


def test_pooled_interval_covers_zero_at_its_nominal_rate():
    rng = np.random.default_rng(0)
    reps, seeds, n = 400, 5, 20
    accuracy = _sigmoid(np.arange(n, dtype=float), 10)
    r = [np.corrcoef(rng.normal(size=n), accuracy)[0, 1] for _ in range(reps * seeds)]
    table = pl.DataFrame({"rep": np.repeat(np.arange(reps), seeds), "pearson_r": r})
    pooled = pooled_correlations(table, by=["rep"])
    coverage = ((pooled["r_ci_low"] < 0) & (pooled["r_ci_high"] > 0)).mean()
    assert 0.91 <= coverage <= 0.98


def test_detector_fires_before_the_crossing_and_not_on_the_control(synthetic):
    det = synthetic["detections"].filter(pl.col("signal") == "distance_tracked")
    add = det.filter(pl.col("domain") == "add")
    crossed = synthetic["crossings"].filter(pl.col("domain") == "add")
    assert add["crossed"].to_list() == crossed.sort("seed")["crossed"].to_list()
    # 8 − 4σ((t + LEAD − c)/2) is ≥ 5% below its maximum 8 from σ ≥ 0.1, i.e. t ≥ c − LEAD − 2 ln 9;
    # accuracy σ((t − c)/2) + noise crosses 0.5 at c (or c + 1)
    first = int(np.ceil(-LEAD - 2 * np.log(9)))
    assert set(add["lead"].to_list()) <= {-first, -first + 1}
    facts = det.filter(pl.col("domain") == "facts")
    assert facts["crossed"].null_count() == facts.height
    assert facts["fired"].null_count() == facts.height
    assert (det["memorization_onset"] == 400).all()


def test_each_run_gets_its_own_grokking_verdict(synthetic):
    grok = synthetic["grokking"]
    assert grok.height == 2 * len(SEEDS)
    add = grok.filter(pl.col("domain") == "add")
    # training accuracy t/5 reaches 0.9 at checkpoint 5, where held-out accuracy is still ≈ 0
    assert (add["memorized_step"] == 500).all() and add["grokked"].all()
    assert (add["heldout_at_memorized"] < 0.1).all() and (add["delay"] > 0).all()
    facts = grok.filter(pl.col("domain") == "facts")
    assert facts["step_generalized"].null_count() == facts.height and not facts["grokked"].any()
    # every crossing run grokked cleanly, so the pooled "clean" group holds them all
    pooled = synthetic["pooled"].filter(pl.col("metric") == "distance_tracked")
    groups = dict(pooled.select("domain", "n_seeds").rows())
    assert groups["clean"] == groups["grokked"] == len(SEEDS) and "overlap" not in groups


def test_the_report_handles_arms_with_different_domains():
    from pathwatch.report.study import study_markdown
    from pathwatch.study import Arm

    base = _synthetic_series().filter(pl.col("seed") < 2)
    no_facts = base.filter(pl.col("domain") == "add").with_columns(arm=pl.lit("addonly"))
    config = StudyConfig(
        arms=(
            Arm("synthetic", TestbedConfig.tiny(), (0, 1)),
            Arm("addonly", TestbedConfig.tiny(), (0, 1)),
        ),
        max_lag=2,
        n_boot=50,
    )
    tables = study_tables(pl.concat([base, no_facts]), config)
    units = pl.DataFrame(
        {"key": ["synthetic-s0"], "train_seconds": [1.0], "train_cpu_seconds": [1.0]}
        | {"seconds": [1.0], "cpu_seconds": [1.0], "steps": [40]}
    )
    report = study_markdown(tables, config.design(), units, [])
    crossing = tables["crossings"].filter((pl.col("arm") == "addonly") & (pl.col("seed") == 0))
    assert f"| addonly | 0 | {crossing['crossed'][0]} | – |" in report  # no facts column value
    assert "addonly 2 of 2" in report


def test_the_reduced_study_runs_through_the_cli_and_resumes(tmp_path):
    out = tmp_path / "study"
    args = ["study", "--reduced", "--seeds", "2", "--jobs", "1", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"Report: {out / 'report.md'}" in result.output
    report = (out / "report.md").read_text()
    corr = pl.read_parquet(out / "tables" / "correlations.parquet")
    assert set(corr["seed"]) == {0, 1}
    assert set(corr["analysis"]) == {"t0.7-char", "t0.5-char", "t0.7-expert", "t0.7-char-topk"}
    row = corr.filter(
        (pl.col("seed") == 0)
        & (pl.col("domain") == "add")
        & (pl.col("metric") == "distance")
        & (pl.col("analysis") == DEFAULT_ANALYSIS)
    ).row(0, named=True)
    assert f"| 0 | add | {row['n']} | {row['pearson_r']:.2f} [" in report
    assert (out / "figures" / "validation-correlations.png").stat().st_size > 0
    grok = pl.read_parquet(out / "tables" / "grokking.parquet")
    assert grok.select("seed", "domain").sort("seed", "domain").rows() == sorted(
        (seed, domain) for seed in (0, 1) for domain in ("add", "facts", "mul", "sub")
    )
    assert "## Did each run grok?" in report
    trends = pl.read_parquet(out / "tables" / "trends.parquet")
    assert {"churn", "train_loss", "distance"} <= set(trends["metric"])
    assert set(trends["test"]) == {"T1", "T2", "T3", "T4", "T5", "T6"}
    assert "## Trend tests" in report
    series = pl.read_parquet(out / "tables" / "series.parquet")
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "2/2 units reused, 0 to run" in again.output
    assert pl.read_parquet(out / "tables" / "series.parquet").equals(series)


def test_every_metric_and_baseline_goes_through_the_trend_tests(synthetic):
    from pathwatch.evaluation.trends import TESTS

    trends = synthetic["trends"]
    metrics = {"distance", "distance_tracked", "train_loss"}
    assert set(trends["metric"]) == metrics
    assert trends.height == len(metrics) * len(TESTS)
    assert set(trends["kind"]) == {"routing", "baseline"}
    row = trends.filter((pl.col("metric") == "distance_tracked") & (pl.col("test") == "T1"))
    assert row["passed"][0] is True  # the planted lead moves with accuracy, step by step
    noise = trends.filter((pl.col("metric") == "distance") & (pl.col("test") == "T3"))
    assert noise["passed"][0] is False
    control = trends.filter((pl.col("metric") == "distance_tracked") & (pl.col("test") == "T6"))
    assert control["n"][0] == len(SEEDS) and control["passed"][0] is True


def test_the_report_shows_the_trend_tests(synthetic):
    from pathwatch.report.study import study_markdown

    config = StudyConfig(arms=(_arm(),))
    units = pl.DataFrame({"key": ["synthetic-s0"], "train_cpu_seconds": [1.0]})
    report = study_markdown(synthetic, config.design(), units, [])
    assert "## Trend tests" in report
    assert config.trend_criteria().describe() in report
    assert "| distance_tracked | routing | " in report


def test_the_regimes_study_compares_two_testbeds_on_seeds_the_search_did_not_use():
    from pathwatch.study.config import SEARCH_SEEDS

    config = StudyConfig.regimes(seeds=5)
    assert [a.name for a in config.arms] == ["grokking", "stream"]
    assert all(a.seeds == (2, 3, 4, 5, 6) for a in config.arms)
    assert not set(SEARCH_SEEDS) & set(config.arms[1].seeds)
    assert "facts" in config.arms[0].config.domains
    design = config.design()
    assert design.compared == ("grokking", "stream")
    assert design.arms[1].changes.startswith("StreamConfig: ")
    assert StudyConfig.default(seeds=3, first_seed=4).arms[0].seeds == (4, 5, 6)


def test_the_report_shows_each_compared_arm_and_the_regime_conditions(synthetic):
    from pathwatch.report.study import study_markdown
    from pathwatch.study import Arm

    tables = dict(synthetic)
    twin = tables["correlations"].with_columns(arm=pl.lit("twin"))
    tables["correlations"] = pl.concat([tables["correlations"], twin])
    tables["pooled"] = pl.concat(
        [tables["pooled"], tables["pooled"].with_columns(arm=pl.lit("twin"))]
    )
    tables["regime"] = pl.DataFrame(
        {
            "arm": ["twin"] * 4,
            "seed": [0, 0, 1, 1],
            "condition": ["A1", "A7", "A1", "A7"],
            "domain": [None] * 4,
            "value": [1.0, 30.0, 3.0, 30.0],
            "threshold": [2.0, 600.0, 2.0, 600.0],
            "holds": [True, False, False, False],
            "note": [""] * 4,
        }
    )
    arms = (_arm(), Arm("twin", TestbedConfig.tiny(), (0, 1)))
    config = StudyConfig(arms=arms, compare_arms=2)
    units = pl.DataFrame({"key": ["synthetic-s0"], "train_cpu_seconds": [1.0]})
    report = study_markdown(tables, config.design(), units, [])
    assert "## Correlation with held-out accuracy, arm `synthetic`" in report
    assert "## Correlation with held-out accuracy, arm `twin`" in report
    assert "Arm `twin`: A1–A6 hold on 1 of 2 seeds." in report  # A7 is not one of them
    assert "| 0 | ✓ | ✗ |" in report and "| 1 | ✗ | ✗ |" in report
    with pytest.raises(Exception, match="compare_arms"):
        StudyConfig(arms=arms, compare_arms=3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--design", "both"], "design"),
        (["--reduced", "--first-seed", "3"], "--first-seed does not apply to --reduced"),
    ],
)
def test_bad_study_options_get_one_line_before_any_work(tmp_path, args, message):
    out = tmp_path / "study"
    result = CliRunner().invoke(app, ["study", *args, "--out", str(out)])
    assert result.exit_code != 0
    assert message in str(result.exception) + result.output
    assert not out.exists()


def test_the_reduced_regimes_study_measures_the_regime_of_every_unit(tmp_path):
    out = tmp_path / "study"
    args = ["study", "--reduced", "--design", "regimes", "--seeds", "1", "--jobs", "1"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "Arm `tiny`:" in result.output and "Arm `stream-tiny`:" in result.output
    regime = pl.read_parquet(out / "tables" / "regime.parquet")
    assert set(regime["arm"]) == {"tiny", "stream-tiny"}
    assert {"A1", "A2", "A5", "A7"} <= set(regime["condition"])
    stream_a1 = regime.filter((pl.col("arm") == "stream-tiny") & (pl.col("condition") == "A1"))
    assert stream_a1["holds"].to_list() == [True]  # one pass: no probe trained twice
    tiny_a1 = regime.filter((pl.col("arm") == "tiny") & (pl.col("condition") == "A1"))
    assert tiny_a1["holds"].to_list() == [False]  # the grokking testbed records no such count
    report = (out / "report.md").read_text()
    assert "## Regime conditions" in report and "Arm `stream-tiny`: A1–A6 hold on" in report
    assert "## Correlation with held-out accuracy, arm `stream-tiny`" in report
    assert (out / "regime" / "stream-tiny-s0.parquet").is_file()
