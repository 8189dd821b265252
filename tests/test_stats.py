"""regtune.experiments.stats on synthetic scores with a known truth, hand-computed Holm, input validation.

The simulations draw scores from a model with the three sources of variation a sweep has:

* question difficulty ``p_q = 0.2 + 0.6 * Beta(0.5, 0.5)`` (mean 0.5, U-shaped like real QA difficulty),
  shared by every run on that question;
* a per-run seed shift, normal with SD ``seed_sd`` (clipped at 3 SD, which keeps it symmetric), shared by
  every question of that run;
* per-question run noise: the score is ``Beta(k m, k (1 - m))`` with mean ``m = p_q + shift + effect``,
  F1-like (continuous, mass near 0 and 1 for small ``k``).

Nothing is clipped to [0, 1] (the parameters keep ``m`` inside), so the true mean of an arm is exactly
``0.5 + effect`` and the true difference of two arms is exactly the difference of their effects. Each
simulation is vectorised over experiments and seeded, so the file runs in a few seconds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest

from regtune.core.errors import ConfigError, DataError
from regtune.experiments import stats
from regtune.experiments.stats import (
    CellSummary,
    Comparison,
    compare,
    compare_average,
    holm,
    score_matrix,
    summarize,
    summarize_average,
)

N_QUESTIONS = 440
ALPHA = 0.05
#: Mean of the question difficulty 0.2 + 0.6 * Beta(0.5, 0.5), hence the true mean score of an arm.
TRUE_MEAN = 0.5
#: Simulated experiments per Monte Carlo check, and bootstrap replicates in each.
N_EXPERIMENTS = 300
N_BOOT_SIM = 500
#: Two valid files of an average: 2 seeds, 3 and 6 questions.
GOOD_FILES = [np.full((2, 3), 0.5), np.full((2, 6), 0.25)]


def _tolerance(rate: float, n: int) -> float:
    """Three binomial SDs of an observed rate over ``n`` independent experiments whose true rate is ``rate``.

    A correct method then fails a check by chance with probability about 0.1 %; each simulation is seeded,
    so the outcome is fixed anyway, but the margin is not tuned to that seed.
    """
    return 3.0 * math.sqrt(rate * (1.0 - rate) / n)


def _difficulty(rng: np.random.Generator, n_experiments: int) -> np.ndarray:
    """Question difficulties, shape ``(n_experiments, N_QUESTIONS)``, in [0.2, 0.8] with mean 0.5."""
    return 0.2 + 0.6 * rng.beta(0.5, 0.5, size=(n_experiments, N_QUESTIONS))


def _arm(
    rng: np.random.Generator,
    difficulty: np.ndarray,
    n_seeds: int,
    *,
    seed_sd: float,
    concentration: float,
    effect: float = 0.0,
) -> np.ndarray:
    """Scores of one arm, shape ``(n_experiments, n_seeds, N_QUESTIONS)``; see the module docstring."""
    n_experiments = difficulty.shape[0]
    shift = np.clip(rng.normal(0.0, seed_sd, size=(n_experiments, n_seeds, 1)), -3 * seed_sd, 3 * seed_sd)
    mean = difficulty[:, None, :] + shift + effect
    assert mean.min() > 0.0 and mean.max() < 1.0, "model left (0, 1): the true mean would not be known"
    return rng.beta(concentration * mean, concentration * (1.0 - mean))


def _questions_only_interval(matrix: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """The interval this module exists to avoid: questions resampled, the seeds kept fixed (0..100)."""
    question_means = matrix.mean(axis=0)
    index = rng.integers(0, question_means.size, size=(N_BOOT_SIM, question_means.size))
    low, high = np.quantile(question_means[index].mean(axis=1), [ALPHA / 2, 1 - ALPHA / 2])
    return 100.0 * low, 100.0 * high


def _plain_two_level_interval(matrix: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """The textbook two-level percentile bootstrap: seeds and questions resampled with replacement."""
    n_seeds, n_questions = matrix.shape
    seeds = rng.integers(0, n_seeds, size=(N_BOOT_SIM, n_seeds, 1))
    questions = rng.integers(0, n_questions, size=(N_BOOT_SIM, 1, n_questions))
    low, high = np.quantile(matrix[seeds, questions].mean(axis=(1, 2)), [ALPHA / 2, 1 - ALPHA / 2])
    return 100.0 * low, 100.0 * high


# --- compare: a real difference is found, none is invented -------------------------------------------------


def test_injected_difference_is_found() -> None:
    """+5 F1 points over a 1-point seed SD: the interval excludes 0, contains +5, and p < 0.05.

    Five seeds, not three: the seed level has n_seeds - 1 degrees of freedom, and in simulations of this
    model with 3 seeds a +5 gain was detected in only about 50-70 % of experiments (5 seeds: over 95 %).
    """
    rng = np.random.default_rng(20240501)
    difficulty = _difficulty(rng, 1)
    arms = {"treatment": 0.05, "baseline": 0.0}
    scores = {
        name: _arm(rng, difficulty, 5, seed_sd=0.01, concentration=10.0, effect=effect)[0]
        for name, effect in arms.items()
    }
    result = compare(scores["treatment"], scores["baseline"], rng=1)

    assert isinstance(result, Comparison)
    assert (result.n_seeds, result.n_questions) == (5, N_QUESTIONS)
    assert result.delta == pytest.approx(100.0 * (scores["treatment"].mean() - scores["baseline"].mean()))
    assert result.ci_low > 0.0
    assert result.ci_low <= 5.0 <= result.ci_high
    assert result.ci_low <= result.delta <= result.ci_high
    assert result.p_value < ALPHA


@pytest.mark.parametrize(
    ("seed_sd", "regime"),
    [(0.01, "question noise dominates"), (0.05, "seed noise dominates")],
    ids=["questions", "seeds"],
)
def test_null_rejection_rate_is_at_most_alpha(seed_sd: float, regime: str) -> None:
    """Same process in both arms, independent runs: p < 0.05 in at most 5 % of experiments (+ 3 SD).

    With 3 seeds and a 5-point seed SD the plain two-level bootstrap, run on the same experiments, rejects
    far more often: the check below would catch an implementation that resampled the seeds.
    """
    rng = np.random.default_rng(7 if seed_sd < 0.03 else 8)
    difficulty = _difficulty(rng, N_EXPERIMENTS)
    treatment = _arm(rng, difficulty, 3, seed_sd=seed_sd, concentration=1.0)
    baseline = _arm(rng, difficulty, 3, seed_sd=seed_sd, concentration=1.0)

    results = [
        compare(t, b, n_boot=N_BOOT_SIM, rng=i)
        for i, (t, b) in enumerate(zip(treatment, baseline, strict=True))
    ]
    rejected = np.array([r.p_value < ALPHA for r in results])
    excludes_zero = np.array([r.ci_low > 0.0 or r.ci_high < 0.0 for r in results])
    tolerance = _tolerance(ALPHA, N_EXPERIMENTS)

    assert rejected.mean() <= ALPHA + tolerance, regime
    assert excludes_zero.mean() <= ALPHA + tolerance, regime
    # The p-value and the interval come from the same replicates, so they agree (up to a boundary replicate).
    assert np.mean(rejected != excludes_zero) <= 0.02
    if seed_sd >= 0.05:
        plain = [_plain_two_level_interval(t - b, rng) for t, b in zip(treatment, baseline, strict=True)]
        plain_rejects = np.mean([low > 0.0 or high < 0.0 for low, high in plain])
        assert plain_rejects > ALPHA + tolerance, "the simulation cannot tell a too-narrow interval apart"


# --- summarize: coverage of the true mean, and why both levels are needed ----------------------------------


def test_summarize_covers_the_true_mean() -> None:
    """95 % intervals cover the true mean in about 95 % of experiments and are no wider than they must be."""
    rng = np.random.default_rng(11)
    scores = _arm(rng, _difficulty(rng, N_EXPERIMENTS), 3, seed_sd=0.01, concentration=1.0)

    summaries = [summarize(matrix, n_boot=N_BOOT_SIM, rng=i) for i, matrix in enumerate(scores)]
    covered = np.mean([s.ci_low <= 100 * TRUE_MEAN <= s.ci_high for s in summaries])
    tolerance = _tolerance(1 - ALPHA, N_EXPERIMENTS)
    assert 1 - ALPHA - tolerance <= covered <= 1 - ALPHA + tolerance
    means = np.array([s.mean for s in summaries])
    assert abs(means.mean() - 100 * TRUE_MEAN) < 3 * means.std() / math.sqrt(N_EXPERIMENTS)  # unbiased
    # Width against an oracle that knows the SD of the estimate (measured here by the spread of the 300
    # estimates): its 95 % interval is 2 * 1.96 SD wide. With the seed spread estimated from 3 seeds, even the
    # exact t-interval is on average E[s]/sd * t(2, 0.975)/1.96 = 0.886 * 2.195 = 1.95 times that.
    widths = np.array([s.ci_high - s.ci_low for s in summaries])
    assert widths.mean() < 1.95 * 2 * 1.96 * means.std(ddof=1)


def test_both_levels_matter_when_seed_noise_is_large() -> None:
    """Seed SD 5 points: ours still covers ~95 %; a questions-only interval covers far less."""
    rng = np.random.default_rng(12)
    scores = _arm(rng, _difficulty(rng, N_EXPERIMENTS), 3, seed_sd=0.05, concentration=1.0)

    ours = [summarize(matrix, n_boot=N_BOOT_SIM, rng=i) for i, matrix in enumerate(scores)]
    questions_only = [_questions_only_interval(matrix, rng) for matrix in scores]
    covered = np.mean([s.ci_low <= 100 * TRUE_MEAN <= s.ci_high for s in ours])
    covered_questions_only = np.mean([low <= 100 * TRUE_MEAN <= high for low, high in questions_only])

    assert covered >= 1 - ALPHA - _tolerance(1 - ALPHA, N_EXPERIMENTS)
    assert covered_questions_only < 0.80
    mean_width = np.mean([s.ci_high - s.ci_low for s in ours])
    assert mean_width > 1.5 * np.mean([high - low for low, high in questions_only])


def test_interval_widens_with_seed_noise_and_not_the_point_estimate() -> None:
    """Same questions, growing per-seed shifts (summing to zero): the mean stays, the interval widens."""
    rng = np.random.default_rng(13)
    base = _arm(rng, _difficulty(rng, 1), 3, seed_sd=0.0, concentration=4.0)[0]
    # Keep room for the shifts inside [0, 1]; rows in increasing order of their mean, so that adding the
    # increasing shifts (-s, 0, s) can only spread the seed scores further apart.
    base = 0.1 + 0.8 * base
    base = base[np.argsort(base.mean(axis=1))]
    widths = []
    for shift in [0.0, 0.01, 0.02, 0.04, 0.08]:
        shifted = base + np.array([[-shift], [0.0], [shift]])
        summary = summarize(shifted, n_boot=1000, rng=5)
        assert summary.mean == pytest.approx(100 * base.mean())
        widths.append(summary.ci_high - summary.ci_low)
    assert all(narrower < wider for narrower, wider in itertools.pairwise(widths))
    assert widths[-1] > 3 * widths[0]


@pytest.mark.parametrize("n_seeds", [2, 3, 5])
def test_seed_level_is_the_t_interval_when_questions_add_nothing(n_seeds: int) -> None:
    """Every question of a seed differs by the same amount: the interval is the paired t-interval.

    The t quantiles are closed forms (df 1: tan; df 2: (2u - 1) / sqrt(2u(1 - u))) or a table value
    (df 4: 2.776445), not outputs of this code.
    """
    t_975 = {1: math.tan(math.pi * 0.475), 2: 0.95 / math.sqrt(2 * 0.975 * 0.025), 4: 2.776445}[n_seeds - 1]
    rng = np.random.default_rng(14)
    baseline = rng.uniform(0.2, 0.6, size=(n_seeds, 20))
    per_seed = rng.uniform(0.0, 0.2, size=(n_seeds, 1))
    # 200k replicates: the Monte Carlo SD of the 97.5 % quantile is then about 1.4 % for df 1, less above.
    result = compare(baseline + per_seed, baseline, n_boot=200_000, rng=3)

    se = 100 * per_seed.std(ddof=1) / math.sqrt(n_seeds)
    assert result.delta == pytest.approx(100 * per_seed.mean())
    assert (result.ci_high - result.delta) / se == pytest.approx(t_975, rel=0.06)
    assert (result.delta - result.ci_low) / se == pytest.approx(t_975, rel=0.06)


# --- point estimates, single seed, degenerate data ---------------------------------------------------------


def test_summarize_point_estimates() -> None:
    scores = np.array([[1.0, 0.0, 0.5, 0.5], [1.0, 1.0, 0.0, 0.2]])
    summary = summarize(scores, rng=0)
    assert isinstance(summary, CellSummary)
    # Seed scores 50 and 55 (x100): mean 52.5, sample SD |55 - 50| / sqrt(2).
    assert summary.mean == pytest.approx(52.5)
    assert summary.std == pytest.approx(5 / math.sqrt(2))
    assert summary.ci_low <= summary.mean <= summary.ci_high
    assert (summary.n_seeds, summary.n_questions) == (2, 4)


def test_single_seed_has_no_spread_interval_or_p_value() -> None:
    scores = np.array([[1.0, 0.0, 0.5, 0.5]])
    summary = summarize(scores, rng=0)
    assert summary.mean == pytest.approx(50.0)
    assert math.isnan(summary.std) and math.isnan(summary.ci_low) and math.isnan(summary.ci_high)
    result = compare(scores, scores * 0.5, rng=0)
    assert result.delta == pytest.approx(25.0)
    assert math.isnan(result.ci_low) and math.isnan(result.ci_high) and math.isnan(result.p_value)
    assert (result.n_seeds, result.n_questions) == (1, 4)


def test_identical_arms_give_zero_and_p_one() -> None:
    scores = np.random.default_rng(15).uniform(size=(3, 30))
    result = compare(scores, scores, rng=0)
    assert (result.delta, result.ci_low, result.ci_high, result.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_compare_is_antisymmetric() -> None:
    rng = np.random.default_rng(16)
    a, b = rng.uniform(size=(3, 40)), rng.uniform(size=(3, 40))
    forward, backward = compare(a, b, rng=4), compare(b, a, rng=4)
    assert backward.delta == pytest.approx(-forward.delta)
    # The interval mirrors up to Monte Carlo error (the t draws are symmetric only in distribution).
    width = forward.ci_high - forward.ci_low
    assert abs(backward.ci_low + forward.ci_high) < 0.1 * width
    assert abs(backward.ci_high + forward.ci_low) < 0.1 * width


# --- reproducibility and chunking --------------------------------------------------------------------------


def test_same_seed_same_results() -> None:
    rng = np.random.default_rng(17)
    a, b = rng.uniform(size=(3, 60)), rng.uniform(size=(3, 60))
    assert summarize(a, rng=42) == summarize(a, rng=42)
    assert summarize(a, rng=42) == summarize(a, rng=np.random.default_rng(42))
    assert compare(a, b, rng=42) == compare(a, b, rng=42)
    assert compare(a, b, rng=42) == compare(a, b, rng=np.random.default_rng(42))
    # ...and the seed matters: a different one moves the interval (it is Monte Carlo).
    assert summarize(a, rng=42).ci_low != summarize(a, rng=43).ci_low


def test_chunking_does_not_change_the_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(18)
    a, b = rng.uniform(size=(3, 60)), rng.uniform(size=(3, 60))
    whole = compare(a, b, n_boot=500, rng=9)
    monkeypatch.setattr(stats, "_CHUNK_BYTES", 16 * 60 * 7)  # 7 replicates per chunk
    assert compare(a, b, n_boot=500, rng=9) == whole


# --- averages over dev files (XTREME's average over languages) ---------------------------------------------


def test_average_is_the_unweighted_mean_of_file_means() -> None:
    # File a: 4 questions; file b: 40 (10x). Seed scores: a (1/4, 3/4), b (0.9, 0.9) -> averages (.575, .825).
    a = np.array([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    b = np.full((2, 40), 0.9)
    summary = summarize_average([a, b], n_boot=200, rng=0)
    assert summary.mean == pytest.approx(70.0)
    # The pooled mean over all 88 (seed, question) cells, which would let b weigh 10x as much, is not it.
    assert np.concatenate([a, b], axis=1).mean() * 100 == pytest.approx(86.36, abs=0.01)
    assert summary.std == pytest.approx(100 * abs(0.825 - 0.575) / math.sqrt(2))
    assert (summary.n_seeds, summary.n_questions) == (2, 44)
    per_file = [summarize(m, n_boot=200, rng=0).mean for m in (a, b)]
    assert summary.mean == pytest.approx(np.mean(per_file))


def test_average_of_one_file_is_the_file_itself() -> None:
    rng = np.random.default_rng(30)
    t, b = rng.uniform(size=(3, 50)), rng.uniform(size=(3, 50))
    assert summarize_average([t], n_boot=300, rng=5) == summarize(t, n_boot=300, rng=5)
    averaged, direct = compare_average([t], [b], n_boot=300, rng=5), compare(t, b, n_boot=300, rng=5)
    # The same replicates (so the same interval and p); the point estimate differs in rounding only, as
    # it is the mean of the per-seed means here and the mean of all cells there.
    assert (averaged.ci_low, averaged.ci_high, averaged.p_value) == (
        direct.ci_low,
        direct.ci_high,
        direct.p_value,
    )
    assert averaged.delta == pytest.approx(direct.delta, rel=1e-12)


def test_average_resamples_each_file_on_its_own() -> None:
    """No seed noise (identical rows): the interval is the stratified bootstrap of two independent files.

    Its SD is then ``sqrt(var_a / Q_a + var_b / Q_b) / 2`` (population variances, since the bootstrap draws
    from the observed questions); a pooled resample of all 220 questions would mix the two file means.
    """
    rng = np.random.default_rng(31)
    small = np.tile(rng.uniform(0.0, 1.0, size=20), (3, 1))  # few questions, high spread
    large = np.tile(rng.uniform(0.4, 0.6, size=200), (3, 1))  # 10x the questions, low spread
    summary = summarize_average([small, large], n_boot=4000, rng=2)
    sd = math.sqrt(small[0].var() / 20 + large[0].var() / 200) / 2
    assert summary.std == pytest.approx(0.0, abs=1e-9)
    assert (summary.ci_high - summary.ci_low) / 100 == pytest.approx(2 * 1.96 * sd, rel=0.1)


def test_average_seed_level_reads_the_per_seed_averages() -> None:
    """A seed shift that cancels across files (+d on one, -d on the other) leaves the average unmoved.

    With constant questions there is no question noise either, so the interval has no width at all; an
    implementation that combined the per-file seed errors would give it one.
    """
    shift = np.array([[-0.1], [0.0], [0.1]])
    a = np.full((3, 10), 0.4) + shift
    b = np.full((3, 30), 0.6) - shift
    summary = summarize_average([a, b], n_boot=200, rng=0)
    assert summary.mean == pytest.approx(50.0)
    assert summary.ci_low == pytest.approx(50.0) and summary.ci_high == pytest.approx(50.0)
    assert summarize(a, n_boot=200, rng=0).ci_high - summarize(a, n_boot=200, rng=0).ci_low > 10


def test_compare_average_is_the_mean_of_paired_file_differences() -> None:
    rng = np.random.default_rng(32)
    base = [rng.uniform(0.2, 0.6, size=(3, q)) for q in (15, 150)]
    treated = [base[0] + 0.2, base[1]]  # +20 points on the small file only
    result = compare_average(treated, base, n_boot=500, rng=1)
    assert result.delta == pytest.approx(10.0)  # not 20 * 15 / 165, the question-weighted gain
    assert (result.n_seeds, result.n_questions) == (3, 165)
    same = compare_average(base, base, n_boot=200, rng=1)
    assert (same.delta, same.ci_low, same.ci_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    one_seed = compare_average([m[:1] for m in treated], [m[:1] for m in base], n_boot=200, rng=1)
    assert one_seed.delta == pytest.approx(10.0) and math.isnan(one_seed.p_value)


@pytest.mark.parametrize(
    ("treatments", "baselines", "message"),
    [
        ([], [], "empty"),
        (GOOD_FILES, GOOD_FILES[:1], "same files"),
        (GOOD_FILES, [GOOD_FILES[0], np.full((2, 4), 0.5)], r"file 1: .*same shape"),
        ([GOOD_FILES[0], np.full((3, 5), 0.5)], None, "same seeds"),
        (np.full((2, 3), 0.5), None, "list of matrices"),
        ([np.full((2, 3), 50.0)], None, r"treatments\[0\].*divide by 100"),
    ],
)
def test_bad_average_inputs_raise_data_error(treatments: object, baselines: object, message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        compare_average(treatments, treatments if baselines is None else baselines)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
    if baselines is None:
        with pytest.raises(DataError):
            summarize_average(treatments)  # type: ignore[arg-type]


# --- Holm --------------------------------------------------------------------------------------------------


def test_holm_hand_computed() -> None:
    # Sorted: a 0.01 x 4 = 0.04; c 0.03 x 3 = 0.09; b 0.04 x 2 = 0.08 -> running max 0.09; d 0.20 x 1 = 0.20.
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.20})
    assert list(adjusted) == ["a", "b", "c", "d"]
    assert adjusted == pytest.approx({"a": 0.04, "b": 0.09, "c": 0.09, "d": 0.20})


def test_holm_caps_at_one_single_p_and_ties() -> None:
    assert holm({"x": 0.4, "y": 0.9, "z": 0.7}) == {"x": 1.0, "y": 1.0, "z": 1.0}
    assert holm({"x": 0.3, "y": 0.6}) == pytest.approx({"x": 0.6, "y": 0.6})
    assert holm({"only": 0.037}) == {"only": 0.037}
    assert holm({"a": 0.02, "b": 0.02}) == pytest.approx({"a": 0.04, "b": 0.04})
    assert holm({}) == {}


def test_holm_matches_the_step_down_procedure() -> None:
    """Adjusted <= alpha rejects exactly what Holm's sequential procedure rejects at alpha, for any alpha."""
    rng = np.random.default_rng(19)
    for _ in range(50):
        m = int(rng.integers(1, 9))
        raw = {f"t{i}": float(p) for i, p in enumerate(rng.uniform(0, 0.2, size=m) ** 2)}
        adjusted = holm(raw)
        assert all(raw[k] <= adjusted[k] <= 1.0 for k in raw)
        ordered = sorted(raw, key=raw.__getitem__)
        assert all(adjusted[a] <= adjusted[b] for a, b in itertools.pairwise(ordered))  # monotone
        for alpha in (0.001, 0.01, 0.05, 0.1):
            rejected = set()
            for k, name in enumerate(ordered):
                if raw[name] > alpha / (m - k):
                    break
                rejected.add(name)
            assert {name for name in raw if adjusted[name] <= alpha} == rejected


def test_holm_skips_untested_entries() -> None:
    adjusted = holm({"a": 0.01, "b": None, "c": math.nan, "d": 0.04})
    assert list(adjusted) == ["a", "b", "c", "d"]
    assert adjusted["a"] == pytest.approx(0.02) and adjusted["d"] == pytest.approx(0.04)  # family of 2
    assert math.isnan(adjusted["b"]) and math.isnan(adjusted["c"])


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.inf, "x"])
def test_holm_rejects_invalid_p(bad: object) -> None:
    with pytest.raises(ConfigError, match="p-value for 'b'"):
        holm({"a": 0.1, "b": bad})  # type: ignore[dict-item]


# --- score_matrix ------------------------------------------------------------------------------------------


def _run(**scores: tuple[float, float]) -> dict[str, dict[str, float]]:
    return {qid: {"exact_match": em, "f1": f1} for qid, (em, f1) in scores.items()}


def test_score_matrix_order_and_metric() -> None:
    runs = [_run(q2=(0, 0.5), q1=(1, 1.0), q3=(0, 0.0)), _run(q3=(1, 1.0), q1=(0, 0.25), q2=(0, 0.75))]
    f1, ids = score_matrix(runs, "f1")
    assert ids == ["q1", "q2", "q3"]  # sorted, whatever the dicts' order
    np.testing.assert_array_equal(f1, [[1.0, 0.5, 0.0], [0.25, 0.75, 1.0]])
    em, _ = score_matrix(runs, "exact_match")
    np.testing.assert_array_equal(em, [[1, 0, 0], [0, 0, 1]])
    assert f1.dtype == np.float64 and f1.shape == (2, 3)


def test_score_matrix_explicit_ids_set_the_order_and_may_leave_questions_out() -> None:
    runs = [_run(q1=(1, 1.0), q2=(0, 0.5), q3=(0, 0.0)), _run(q1=(0, 0.2), q2=(1, 1.0), q4=(1, 1.0))]
    matrix, ids = score_matrix(runs, "f1", question_ids=["q2", "q1"])
    assert ids == ["q2", "q1"]
    np.testing.assert_array_equal(matrix, [[0.5, 1.0], [1.0, 0.2]])


def test_score_matrix_names_the_first_missing_question() -> None:
    runs = [_run(q1=(1, 1.0), q2=(0, 0.5), q3=(0, 0.0), q4=(1, 1.0)), _run(q1=(1, 1.0), q3=(0, 0.0))]
    with pytest.raises(DataError, match=r"run 1 has no score for question 'q2'"):
        score_matrix(runs, "f1")
    with pytest.raises(DataError, match=r"run 1 has no score for question 'q4'"):
        score_matrix(runs, "f1", question_ids=["q4", "q2"])
    extra = [_run(q1=(1, 1.0)), _run(q1=(1, 1.0), q9=(0, 0.0))]
    with pytest.raises(DataError, match=r"run 0 has no score for question 'q9'"):
        score_matrix(extra, "f1")


@pytest.mark.parametrize(
    ("runs", "kwargs", "message"),
    [
        ([], {}, "no runs"),
        ([{}], {}, "no questions"),
        ([_run(q1=(1, 1.0))], {"question_ids": []}, "no questions"),
        ([_run(q1=(1, 1.0))], {"question_ids": ["q1", "q1"]}, "'q1' appears more than once"),
        ([_run(q1=(1, 1.0))], {"question_ids": "q1"}, "not a single string"),
        ([{"q1": {"exact_match": 1}}], {}, "no 'f1' score"),
        ([{"q1": {"f1": 1.5}}], {}, r"must be in \[0, 1\]"),
        ([{"q1": {"f1": math.nan}}], {}, r"must be in \[0, 1\]"),
        ([{"q1": {"f1": "high"}}], {}, "must be a number"),
    ],
)
def test_score_matrix_rejects_bad_input(runs: list, kwargs: dict, message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        score_matrix(runs, "f1", **kwargs)
    assert "\n" not in str(info.value)


# --- validation --------------------------------------------------------------------------------------------

GOOD = np.full((2, 3), 0.5)


@pytest.mark.parametrize(
    ("scores", "message"),
    [
        (np.full(3, 0.5), "must be 2-D"),
        (np.full((2, 3, 1), 0.5), "must be 2-D"),
        (np.empty((0, 3)), "empty"),
        (np.empty((3, 0)), "empty"),
        (np.full((3, 1), 0.5), "need at least 2"),
        (np.array([[0.5, 1.5]]), r"in \[0, 1\]"),
        (np.array([[0.5, -0.1]]), r"in \[0, 1\]"),
        (np.array([[50.0, 70.0]]), "divide by 100"),
        (np.array([[0.5, math.nan]]), "non-finite"),
        (np.array([[0.5, math.inf]]), "non-finite"),
        ([["a", "b"]], "numeric array"),
        ([[0.5, 0.5], [0.5]], "numeric array"),
    ],
)
@pytest.mark.parametrize("call", ["summarize", "compare_treatment", "compare_baseline"])
def test_bad_scores_raise_data_error(scores: object, message: str, call: str) -> None:
    run: dict[str, Callable[[], object]] = {
        "summarize": lambda: summarize(scores),  # type: ignore[arg-type]
        "compare_treatment": lambda: compare(scores, GOOD),  # type: ignore[arg-type]
        "compare_baseline": lambda: compare(GOOD, scores),  # type: ignore[arg-type]
    }
    with pytest.raises(DataError, match=message) as info:
        run[call]()
    assert "\n" not in str(info.value)


def test_compare_rejects_mismatched_shapes() -> None:
    with pytest.raises(DataError, match=r"same shape.*\(2, 3\) and \(3, 3\)"):
        compare(GOOD, np.full((3, 3), 0.5))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"confidence": 0.0}, "confidence"),
        ({"confidence": 1.0}, "confidence"),
        ({"confidence": 1.2}, "confidence"),
        ({"confidence": -0.5}, "confidence"),
        ({"confidence": math.nan}, "confidence"),
        ({"confidence": "0.95"}, "confidence"),
        ({"n_boot": 99}, "at least 100"),
        ({"n_boot": 0}, "at least 100"),
        ({"n_boot": 500.0}, "integer"),
        ({"n_boot": True}, "integer"),
        ({"rng": -1}, "non-negative"),
        ({"rng": 1.5}, "Generator"),
        ({"rng": "seed"}, "Generator"),
    ],
)
def test_bad_options_raise_config_error(kwargs: dict, message: str) -> None:
    for call in (lambda: summarize(GOOD, **kwargs), lambda: compare(GOOD, GOOD, **kwargs)):
        with pytest.raises(ConfigError, match=message) as info:
            call()
        assert "\n" not in str(info.value)


def test_smallest_allowed_options_work() -> None:
    summary = summarize(np.array([[0.0, 1.0], [1.0, 1.0]]), n_boot=100, confidence=0.5, rng=np.int64(3))
    assert summary.ci_low <= summary.ci_high
