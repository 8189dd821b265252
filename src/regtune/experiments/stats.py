"""Seed- and question-aware statistics for per-question QA scores: cell summaries, paired comparisons, Holm.

Why this module exists: one fine-tuning run per setting on a few hundred dev questions cannot tell a real
gain from noise. Two sources of noise move a dev score, and every interval here contains both:

* **questions**: the dev set is a sample of questions; on 440 questions the sampling SD of F1 alone is
  about 2 points;
* **seeds**: another training run (seed, data order, head init) of the *same* setting lands elsewhere, by
  about as much.

Inputs are score matrices of shape ``(n_seeds, n_questions)``: row ``i`` is seed ``i``, column ``j`` is
question ``j``, values are per-question scores on 0..1 (exact match or F1). Every reported number is on
0..100, the SQuAD convention.

How the intervals are built (:func:`summarize` and :func:`compare` share it). With ``X`` the matrix, the
estimate is the grand mean, i.e. the mean over seeds of each seed's dataset score. It is modelled as
``X[s, q] = mu + seed_s + question_q + noise_sq``, so its sampling variance is
``var(seed)/S + var(question)/Q + var(noise)/(S*Q)``. Each replicate of the reference distribution is the
estimate plus two independent deviations:

* a **question** deviation: one bootstrap resample of the questions (with replacement, shared by all seeds
  because every seed answered the same questions) applied to the per-question means over seeds. Those
  means also carry the run noise, which the seed level already counts, so the deviation is shrunk by
  ``sqrt(1 - MS_residual / MS_question)`` (two-way ANOVA mean squares) to keep ``var(question)/Q`` only;
* a **seed** deviation: ``SE * t`` with ``SE`` the standard error of the ``S`` per-seed dataset scores and
  ``t`` a Student t draw with ``S - 1`` degrees of freedom. The per-seed scores are means over hundreds of
  questions, hence close to normal, and their spread estimates ``var(seed) + var(noise)/Q`` without bias.

The interval is the percentile interval of the replicates.

Why not the textbook two-level bootstrap (resample seeds *and* questions): with the 3-5 seeds a sweep can
afford it is anti-conservative. A resample of 3 seeds never leaves the range of the 3 observed seed scores,
and its variance is only ``(S-1)/S`` of the right one. In simulations with 3 seeds, 440 questions and no
true difference it rejected at the 5 % level in 7-11 % of experiments at a seed SD of 3 F1 points and in
10-20 % at 5 points, depending on the per-question noise (``tests/test_stats.py`` checks one such case).
The Student t at the seed level is the exact small-sample reference: with no question-level effect, the
resulting test *is* the paired t-test over seeds. The question bootstrap keeps the question level free of
distributional assumptions. A Satterthwaite-style alternative (one t with pooled degrees of freedom for
both levels) gave narrower intervals but covered only 91-95 % in the same simulations, so it was dropped.

The price of validity with few seeds is width, not coverage (95-98 % for a nominal 95 % in those
simulations): with 3 seeds an interval is on average 1.2-1.9 times as wide as one that knew the true
variances (for pure seed noise the exact t-interval, from 2 degrees of freedom, is 1.95 times as wide).
More seeds shrink this fast: the t quantile is 4.30 for 3 seeds, 2.78 for 5 and 2.26 for 10. In the
tests' model, a true +5 F1 gain with a 1-point seed SD was found (p < 0.05) in only about 50-70 % of
experiments with 3 seeds, but in over 95 % with 5.

One seed cannot say anything about seed-to-seed variation, so with ``n_seeds == 1`` every interval and
p-value is NaN (not an interval that silently leaves seeds out).

Averages over dev files (:func:`summarize_average`, :func:`compare_average`; XTREME's average over
languages) use the same reference, stratified: each file's questions are resampled on their own and its
shrunk deviation weighs ``1 / K``, and the seed level reads the per-seed averages over the files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from regtune.core.errors import ConfigError, DataError

#: Fewer bootstrap replicates than this cannot resolve a 95 % percentile interval.
MIN_BOOT = 100

#: Memory budget (bytes) for one chunk of bootstrap question indices and the scores they pick.
_CHUNK_BYTES = 200 * 2**20


@dataclass(frozen=True)
class CellSummary:
    """One cell (one setting on one dev file) over its seeds and questions, on 0..100.

    Attributes:
        mean: Mean over seeds of each seed's dataset score.
        std: Sample standard deviation (ddof=1) of the per-seed dataset scores: the seed-to-seed spread a
            reader should expect from one more run. NaN for a single seed.
        ci_low: Lower end of the interval for the mean over seeds *and* questions; NaN for a single seed.
        ci_high: Upper end of that interval; NaN for a single seed.
        n_seeds: Number of seeds (rows).
        n_questions: Number of questions (columns).
    """

    mean: float
    std: float
    ci_low: float
    ci_high: float
    n_seeds: int
    n_questions: int


@dataclass(frozen=True)
class Comparison:
    """Treatment minus baseline, paired by seed and question, on 0..100.

    Attributes:
        delta: ``mean(treatment) - mean(baseline)``.
        ci_low: Lower end of the interval for the difference; NaN for a single seed.
        ci_high: Upper end of that interval; NaN for a single seed.
        p_value: Two-sided p-value for "no difference"; NaN for a single seed.
        n_seeds: Number of seed pairs (rows).
        n_questions: Number of questions (columns).
    """

    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    n_seeds: int
    n_questions: int


def summarize(
    scores: npt.ArrayLike,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    rng: np.random.Generator | int | None = None,
) -> CellSummary:
    """Summarise one cell: the mean over seeds, the seed-to-seed SD, and an interval with both noise levels.

    Args:
        scores: Per-question scores on 0..1, shape ``(n_seeds, n_questions)``; row ``i`` is seed ``i``.
        n_boot: Number of replicates of the reference distribution (at least :data:`MIN_BOOT`).
        confidence: Coverage of the interval, in (0, 1).
        rng: A generator, a seed, or None for fresh entropy; the same seed gives the same result.

    Returns:
        A :class:`CellSummary` on 0..100. ``std``, ``ci_low`` and ``ci_high`` are NaN for one seed: its
        spread over seeds is unknown, and an interval without it would be too narrow.

    Raises:
        DataError: ``scores`` is not a non-empty 2-D array of finite values in [0, 1] with at least two
            questions.
        ConfigError: ``n_boot``, ``confidence`` or ``rng`` is invalid.
    """
    _check_options(n_boot, confidence)
    generator = _as_rng(rng)
    matrix = _check_scores(scores, "scores")
    n_seeds, n_questions = matrix.shape
    seed_scores = matrix.mean(axis=1)
    mean = 100.0 * float(seed_scores.mean())
    if n_seeds < 2:
        return CellSummary(mean, math.nan, math.nan, math.nan, n_seeds, n_questions)
    replicates = _replicates([matrix], n_boot, generator)
    low, high = _percentile_interval(replicates, confidence)
    std = 100.0 * float(seed_scores.std(ddof=1))
    return CellSummary(mean, std, 100.0 * low, 100.0 * high, n_seeds, n_questions)


def compare(
    treatment: npt.ArrayLike,
    baseline: npt.ArrayLike,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    rng: np.random.Generator | int | None = None,
) -> Comparison:
    """Compare two settings on the same seeds and questions: difference, interval and two-sided p-value.

    Everything is computed on the paired differences ``D = treatment - baseline`` (shape
    ``(n_seeds, n_questions)``), so question difficulty cancels, and so does whatever a seed does to both
    runs alike (data order, head init) if anything. The interval is built as described in the module
    docstring: a question bootstrap (one resample for all seeds) plus a Student t draw with
    ``n_seeds - 1`` degrees of freedom scaled by the standard error of the per-seed mean differences.

    The p-value comes from the same replicates, so it agrees with the interval: it is twice the smaller
    share of replicates on either side of 0 (with the usual +1, so ``p >= 2 / (n_boot + 1)``), and
    ``p < 1 - confidence`` when the interval excludes 0, up to the replicate at the boundary. Why this test:

    * It stays valid when run-to-run noise is as large as question sampling noise. With the same seed,
      treatment and baseline are still *different* training runs, so the per-seed differences scatter by
      the seed noise of both; their spread, with ``n_seeds - 1`` degrees of freedom, is what the t draw
      uses. When the effect does not vary by question, the test is the paired t-test on the per-seed
      differences, exact for normal per-seed means.
    * Rejected alternatives: a test that resamples only questions with seeds fixed ignores seed noise
      (anti-conservative); the plain two-level bootstrap (seeds and questions) is anti-conservative with
      few seeds (10-20 % false positives at the 5 % level with 3 seeds and a seed SD of 5 points);
      flipping the sign of whole seeds is exact but has only ``2**n_seeds`` patterns (p >= 0.25 with 3
      seeds); flipping single (seed, question) cells ignores that a seed shifts all its questions at once.

    Assumptions: the seeds of each arm are independent runs of that setting; the dev questions are a
    sample of the questions of interest; per-seed mean scores are close to normal (they average hundreds
    of questions); scores are additive in seed, question and noise. Pairing rows by seed index is
    bookkeeping only; if seeds share nothing across arms the test is still valid.

    Args:
        treatment: Scores of the treated setting on 0..1, shape ``(n_seeds, n_questions)``.
        baseline: Scores of the baseline, same shape, same seed order (row ``i`` of both from seed ``i``)
            and same question order.
        n_boot: Number of replicates (at least :data:`MIN_BOOT`).
        confidence: Coverage of the interval, in (0, 1).
        rng: A generator, a seed, or None for fresh entropy; the same seed gives the same result.

    Returns:
        A :class:`Comparison` on 0..100; interval and p-value are NaN for one seed.

    Raises:
        DataError: Either matrix is invalid (see :func:`summarize`) or their shapes differ.
        ConfigError: ``n_boot``, ``confidence`` or ``rng`` is invalid.
    """
    _check_options(n_boot, confidence)
    generator = _as_rng(rng)
    treated = _check_scores(treatment, "treatment")
    base = _check_scores(baseline, "baseline")
    if treated.shape != base.shape:
        raise DataError(
            f"treatment and baseline must have the same shape (seeds, questions); "
            f"got {treated.shape} and {base.shape}"
        )
    differences = treated - base
    n_seeds, n_questions = differences.shape
    delta = 100.0 * float(differences.mean())
    if n_seeds < 2:
        return Comparison(delta, math.nan, math.nan, math.nan, n_seeds, n_questions)
    replicates = _replicates([differences], n_boot, generator)
    low, high = _percentile_interval(replicates, confidence)
    return Comparison(delta, 100.0 * low, 100.0 * high, _two_sided_p(replicates), n_seeds, n_questions)


def summarize_average(
    scores: Sequence[npt.ArrayLike],
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    rng: np.random.Generator | int | None = None,
) -> CellSummary:
    """Summarise the unweighted average over several dev files (e.g. languages) of one setting.

    This is XTREME's headline number (https://arxiv.org/abs/2003.11080): the mean over files of each
    file's score, every file weighing ``1 / K`` whatever its number of questions. Computed per seed first:
    seed ``s`` scores ``a_s = (1/K) sum_k mean_q X_k[s, q]``, and the estimate is the mean of the ``a_s``
    (the same as the mean over files of :func:`summarize`'s per-file means).

    What the interval resamples, level by level (the module docstring's reference, stratified by file):

    * **questions**, within each file independently: file ``k``'s questions are resampled with
      replacement (``Q_k`` draws, one resample shared by all seeds), its deviation is shrunk by its own
      ANOVA factor, and the ``K`` deviations are averaged with weight ``1 / K``. Files are separate
      samples of questions (different languages, different articles), so they are resampled apart, and a
      large file can neither swamp a small one nor lend it its precision;
    * **seeds**, once for all files: the standard error of the ``S`` per-seed averages ``a_s`` times a
      Student t draw with ``S - 1`` degrees of freedom. A seed that is lucky on every language is one
      lucky seed, not ``K`` independent ones, which is why the seed level reads the averages.

    Args:
        scores: One matrix per file, each of shape ``(n_seeds, n_questions_k)`` on 0..1; every matrix
            has the same seeds in the same row order, the number of questions may differ.
        n_boot: Number of replicates (at least :data:`MIN_BOOT`).
        confidence: Coverage of the interval, in (0, 1).
        rng: A generator, a seed, or None for fresh entropy; the same seed gives the same result.

    Returns:
        A :class:`CellSummary` on 0..100 of the average; ``std`` is the seed-to-seed SD of ``a_s`` and
        ``n_questions`` the total over files. Interval and ``std`` are NaN for one seed.

    Raises:
        DataError: No file, a matrix is invalid (see :func:`summarize`), or the files have different
            numbers of seeds.
        ConfigError: ``n_boot``, ``confidence`` or ``rng`` is invalid.
    """
    _check_options(n_boot, confidence)
    generator = _as_rng(rng)
    matrices = _check_files(scores, "scores")
    n_seeds = matrices[0].shape[0]
    n_questions = sum(matrix.shape[1] for matrix in matrices)
    seed_scores = np.mean([matrix.mean(axis=1) for matrix in matrices], axis=0)  # (S,) the a_s
    mean = 100.0 * float(seed_scores.mean())
    if n_seeds < 2:
        return CellSummary(mean, math.nan, math.nan, math.nan, n_seeds, n_questions)
    replicates = _replicates(matrices, n_boot, generator)
    low, high = _percentile_interval(replicates, confidence)
    std = 100.0 * float(seed_scores.std(ddof=1))
    return CellSummary(mean, std, 100.0 * low, 100.0 * high, n_seeds, n_questions)


def compare_average(
    treatments: Sequence[npt.ArrayLike],
    baselines: Sequence[npt.ArrayLike],
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    rng: np.random.Generator | int | None = None,
) -> Comparison:
    """Compare two settings' averages over several dev files, paired by seed and question in every file.

    The difference of the averages is the average of the per-file paired differences ``D_k = T_k - B_k``;
    its interval resamples those differences as :func:`summarize_average` resamples scores (questions
    within each file independently, shrunk and weighted ``1 / K``; seeds through the per-seed average
    difference with Student t tails), and the p-value is read from the same replicates as in
    :func:`compare`. With one file it is :func:`compare`.

    Args:
        treatments: One matrix per file of the treated setting, each ``(n_seeds, n_questions_k)`` on 0..1.
        baselines: The baseline's matrices in the same file order, each of the same shape as the
            treatment's (same seeds in the same rows, same questions in the same columns).
        n_boot: Number of replicates (at least :data:`MIN_BOOT`).
        confidence: Coverage of the interval, in (0, 1).
        rng: A generator, a seed, or None for fresh entropy; the same seed gives the same result.

    Returns:
        A :class:`Comparison` on 0..100; ``n_questions`` is the total over files; interval and p-value
        are NaN for one seed.

    Raises:
        DataError: The lists differ in length, a matrix is invalid, a treatment and its baseline differ
            in shape, or the files have different numbers of seeds.
        ConfigError: ``n_boot``, ``confidence`` or ``rng`` is invalid.
    """
    _check_options(n_boot, confidence)
    generator = _as_rng(rng)
    treated = _check_files(treatments, "treatments")
    base = _check_files(baselines, "baselines")
    if len(treated) != len(base):
        raise DataError(
            f"treatments and baselines must cover the same files; got {len(treated)} and {len(base)}"
        )
    for k, (one, other) in enumerate(zip(treated, base, strict=True)):
        if one.shape != other.shape:
            raise DataError(
                f"file {k}: treatment and baseline must have the same shape (seeds, questions); "
                f"got {one.shape} and {other.shape}"
            )
    differences = [one - other for one, other in zip(treated, base, strict=True)]
    n_seeds = differences[0].shape[0]
    n_questions = sum(matrix.shape[1] for matrix in differences)
    delta = 100.0 * float(np.mean([matrix.mean(axis=1) for matrix in differences], axis=0).mean())
    if n_seeds < 2:
        return Comparison(delta, math.nan, math.nan, math.nan, n_seeds, n_questions)
    replicates = _replicates(differences, n_boot, generator)
    low, high = _percentile_interval(replicates, confidence)
    return Comparison(delta, 100.0 * low, 100.0 * high, _two_sided_p(replicates), n_seeds, n_questions)


def holm(p_values: Mapping[str, float | None]) -> dict[str, float]:
    """Holm–Bonferroni step-down adjusted p-values, for a family of tests (e.g. every τ against τ = 0).

    The k-th smallest of m p-values is multiplied by ``m - k + 1``, then a running maximum makes the
    adjusted values monotone in the raw ones, and they are capped at 1. Rejecting where the adjusted value
    is below α controls the family-wise error rate at α under any dependence between the tests.

    Args:
        p_values: Test name -> raw p-value in [0, 1]. None or NaN marks a test that could not be run
            (e.g. :func:`compare` on one seed); it is left out of the family and comes back as NaN.

    Returns:
        Test name -> adjusted p-value, in the order of ``p_values``.

    Raises:
        ConfigError: A p-value is outside [0, 1] or infinite.
    """
    # Hand-written on purpose: it is a few lines, and statsmodels (with scipy and pandas beneath it) would
    # be a heavy dependency for this one function.
    tested: list[tuple[str, float]] = []
    for name, value in p_values.items():
        if value is None:
            continue
        try:
            p = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"p-value for {name!r} must be a number; got {value!r}") from None
        if math.isnan(p):
            continue
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"p-value for {name!r} must be in [0, 1]; got {value!r}")
        tested.append((name, p))
    m = len(tested)
    adjusted: dict[str, float] = {}
    running = 0.0
    # A stable sort keeps ties in input order; ties get the same adjusted value through the running max.
    for rank, (name, p) in enumerate(sorted(tested, key=lambda item: item[1])):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[name] = running
    return {name: adjusted.get(name, math.nan) for name in p_values}


def score_matrix(
    runs: Sequence[Mapping[str, Mapping[str, float]]],
    metric: str,
    question_ids: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Stack per-question scores of several seeds into the ``(n_seeds, n_questions)`` matrix used here.

    Args:
        runs: One dict per seed, in seed order: question id -> ``{"exact_match": 0|1, "f1": 0..1}``.
        metric: The score to take from each question's dict, e.g. ``"f1"`` or ``"exact_match"``.
        question_ids: The questions to use, in column order. Every run must have all of them; other
            questions in a run are ignored. None: the sorted question ids of the first run, and then every
            run must have exactly those questions, since a comparison on different questions is not paired.

    Returns:
        ``(matrix, ids)``: float64 scores of shape ``(len(runs), len(ids))`` and the question ids of its
        columns.

    Raises:
        DataError: No run or no question; duplicate ids in ``question_ids``; a run lacks a question (the
            message names the first missing id) or has one the first run lacks; a score is missing, not a
            number, not finite or outside [0, 1].
    """
    if len(runs) == 0:
        raise DataError("no runs to build a score matrix from")
    if question_ids is None:
        ids = sorted(runs[0])
        reference = set(ids)
        for index, run in enumerate(runs[1:], start=1):
            missing = [qid for qid in ids if qid not in run]
            if missing:
                raise DataError(f"run {index} has no score for question {missing[0]!r}, which run 0 has")
            extra = sorted(set(run) - reference)
            if extra:
                raise DataError(f"run 0 has no score for question {extra[0]!r}, which run {index} has")
    else:
        if isinstance(question_ids, str):
            raise DataError("question_ids must be a sequence of question ids, not a single string")
        ids = list(question_ids)
        if len(set(ids)) != len(ids):
            duplicate = next(qid for i, qid in enumerate(ids) if qid in ids[:i])
            raise DataError(f"question id {duplicate!r} appears more than once in question_ids")
        for index, run in enumerate(runs):
            missing = next((qid for qid in ids if qid not in run), None)
            if missing is not None:
                raise DataError(f"run {index} has no score for question {missing!r}")
    if not ids:
        raise DataError("no questions to build a score matrix from")
    matrix = np.empty((len(runs), len(ids)), dtype=np.float64)
    for row, run in enumerate(runs):
        for col, qid in enumerate(ids):
            record = run[qid]
            if metric not in record:
                raise DataError(f"run {row}, question {qid!r}: no {metric!r} score (has {sorted(record)})")
            try:
                value = float(record[metric])
            except (TypeError, ValueError):
                raise DataError(
                    f"run {row}, question {qid!r}: {metric} must be a number; got {record[metric]!r}"
                ) from None
            if not 0.0 <= value <= 1.0:  # also False for NaN
                raise DataError(f"run {row}, question {qid!r}: {metric} must be in [0, 1]; got {value!r}")
            matrix[row, col] = value
    return matrix, ids


@dataclass(frozen=True)
class MeanInterval:
    """The mean of per-question values of one model, with a question-bootstrap interval (natural scale).

    Attributes:
        mean: Mean over the questions with a finite value.
        ci_low: Lower end of the percentile interval; NaN with fewer than two values.
        ci_high: Upper end of the percentile interval; NaN with fewer than two values.
        n: Number of questions with a finite value (NaN values mark undefined ones and are left out).
    """

    mean: float
    ci_low: float
    ci_high: float
    n: int


@dataclass(frozen=True)
class PairedDifference:
    """``mean(treatment - baseline)`` over questions where both are finite, with interval and p-value."""

    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int


def mean_interval(
    values: npt.ArrayLike,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    rng: np.random.Generator | int | None = None,
) -> MeanInterval:
    """Mean and question-bootstrap interval of one model's per-question values (any scale).

    Unlike :func:`summarize` this has no seed level: it describes *one* model (e.g. one checkpoint's
    attribution focus), so its interval covers question sampling only. NaN values are left out.
    """
    _check_options(n_boot, confidence)
    finite = _finite_vector(values, "values")
    if finite.size == 0:
        return MeanInterval(math.nan, math.nan, math.nan, 0)
    mean = float(finite.mean())
    if finite.size < 2:
        return MeanInterval(mean, math.nan, math.nan, int(finite.size))
    replicates = _bootstrap_means(finite, n_boot, _as_rng(rng))
    low, high = _percentile_interval(replicates, confidence)
    return MeanInterval(mean, low, high, int(finite.size))


def paired_difference(
    treatment: npt.ArrayLike,
    baseline: npt.ArrayLike,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    rng: np.random.Generator | int | None = None,
) -> PairedDifference:
    """Paired question-bootstrap comparison of two models' per-question values (any scale).

    Questions where either value is NaN are dropped from both. The p-value is computed from the replicates
    as in :func:`compare` (twice the smaller tail beyond 0, with the +1 correction). One model per arm
    means the interval says nothing about training-seed noise: it answers "do these two checkpoints
    differ on this population of questions", not "does the setting differ".
    """
    _check_options(n_boot, confidence)
    treated = _finite_vector(treatment, "treatment", drop=False)
    base = _finite_vector(baseline, "baseline", drop=False)
    if treated.shape != base.shape:
        raise DataError(
            f"treatment and baseline must have one value per question; got {treated.size} and {base.size}"
        )
    both = np.isfinite(treated) & np.isfinite(base)
    differences = treated[both] - base[both]
    if differences.size < 2:
        delta = float(differences.mean()) if differences.size else math.nan
        return PairedDifference(delta, math.nan, math.nan, math.nan, int(differences.size))
    replicates = _bootstrap_means(differences, n_boot, _as_rng(rng))
    low, high = _percentile_interval(replicates, confidence)
    p_value = _two_sided_p(replicates)
    return PairedDifference(float(differences.mean()), low, high, p_value, int(differences.size))


# --- internals -------------------------------------------------------------------------------------------


def _replicates(matrices: Sequence[np.ndarray], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Replicates of the unweighted mean over ``matrices`` of their grand means, on their scale.

    Each matrix has shape ``(S, Q_k)`` with the same ``S >= 2`` seeds (row ``i`` of every matrix from
    seed ``i``) and ``Q_k >= 2``. Returns an array of shape ``(n_boot,)``: the estimate + the average of
    the matrices' shrunk question-bootstrap deviations, each drawn independently (a stratified bootstrap)
    + the standard error of the per-seed averages times Student t with ``S - 1`` degrees of freedom (see
    the module docstring). With one matrix this is exactly the module docstring's single-file reference.
    """
    n_seeds = matrices[0].shape[0]
    count = len(matrices)
    centre = 0.0
    deviation = np.zeros(n_boot, dtype=np.float64)
    seed_means = np.zeros(n_seeds, dtype=np.float64)
    for matrix in matrices:
        grand, question_deviation = _question_deviations(matrix, n_boot, rng)
        centre += grand
        deviation = deviation + question_deviation
        seed_means = seed_means + matrix.mean(axis=1)
    # Dividing by 1 is exact, so a single matrix gives bit for bit the same replicates as before averages.
    centre, deviation, seed_means = centre / count, deviation / count, seed_means / count
    # Seed level: the standard error of the S per-seed (averaged) scores, with Student t tails for S - 1
    # degrees of freedom. Averaging over files first keeps what a seed does to every file alike.
    seed_se = float(seed_means.std(ddof=1)) / math.sqrt(n_seeds)
    t_draws = rng.standard_t(n_seeds - 1, size=n_boot)
    return centre + deviation + seed_se * t_draws


def _question_deviations(
    matrix: np.ndarray, n_boot: int, rng: np.random.Generator
) -> tuple[float, np.ndarray]:
    """The grand mean of ``matrix`` (``(S, Q)``) and ``n_boot`` shrunk question-bootstrap deviations."""
    n_seeds, n_questions = matrix.shape
    seed_means = matrix.mean(axis=1)  # (S,)
    question_means = matrix.mean(axis=0)  # (Q,)
    grand = float(question_means.mean())
    # Two-way ANOVA without replication: E[ms_question] = S var(question) + var(noise), E[ms_residual] =
    # var(noise). The question means carry var(question) + var(noise)/S; shrinking their deviations by
    # sqrt(1 - ms_residual/ms_question) leaves var(question), since the seed level counts the noise.
    ms_question = n_seeds * float(np.sum((question_means - grand) ** 2)) / (n_questions - 1)
    residual = matrix - seed_means[:, None] - question_means[None, :] + grand
    ms_residual = float(np.sum(residual**2)) / ((n_seeds - 1) * (n_questions - 1))
    shrink = math.sqrt(max(0.0, 1.0 - ms_residual / ms_question)) if ms_question > 0.0 else 0.0

    # Each replicate is the mean of Q question means drawn with replacement. Chunked so the (rows, Q)
    # index and gathered arrays stay within the memory budget; the draws do not depend on it.
    resampled = np.empty(n_boot, dtype=np.float64)
    rows_per_chunk = max(1, _CHUNK_BYTES // (16 * n_questions))
    for start in range(0, n_boot, rows_per_chunk):
        stop = min(n_boot, start + rows_per_chunk)
        index = rng.integers(0, n_questions, size=(stop - start, n_questions))
        resampled[start:stop] = question_means[index].mean(axis=1)
    return grand, shrink * (resampled - grand)


def _two_sided_p(replicates: np.ndarray) -> float:
    """Twice the smaller share of ``replicates`` on either side of 0, with the +1 correction, capped at 1."""
    below = int(np.count_nonzero(replicates <= 0.0))
    above = int(np.count_nonzero(replicates >= 0.0))
    return min(1.0, 2.0 * (min(below, above) + 1) / (replicates.size + 1))


def _percentile_interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    """The equal-tailed percentile interval of ``replicates`` with the given coverage."""
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(replicates, [tail, 1.0 - tail])
    return float(low), float(high)


def _check_options(n_boot: int, confidence: float) -> None:
    """Raise :class:`ConfigError` for a replicate count or a coverage that cannot give a sound interval."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer):
        raise ConfigError(f"n_boot must be an integer; got {n_boot!r}")
    if n_boot < MIN_BOOT:
        raise ConfigError(f"n_boot must be at least {MIN_BOOT}; got {n_boot}")
    if isinstance(confidence, bool) or not isinstance(confidence, int | float | np.floating):
        raise ConfigError(f"confidence must be a number in (0, 1); got {confidence!r}")
    if not 0.0 < float(confidence) < 1.0:  # also False for NaN
        raise ConfigError(f"confidence must be in (0, 1); got {confidence!r}")


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    """A generator from a generator (used as is), a non-negative integer seed, or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, bool) or not isinstance(rng, int | np.integer):
        raise ConfigError(f"rng must be a numpy Generator, an integer seed or None; got {rng!r}")
    if rng < 0:
        raise ConfigError(f"rng seed must be non-negative; got {rng}")
    return np.random.default_rng(int(rng))


def _check_scores(scores: npt.ArrayLike, name: str) -> np.ndarray:
    """``scores`` as a float64 ``(n_seeds, n_questions)`` array, or :class:`DataError` naming ``name``."""
    try:
        matrix = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a numeric array of shape (n_seeds, n_questions)") from None
    if matrix.ndim != 2:
        raise DataError(f"{name} must be 2-D, shape (n_seeds, n_questions); got shape {matrix.shape}")
    if matrix.size == 0:
        raise DataError(f"{name} is empty (shape {matrix.shape}); need at least 1 seed and 2 questions")
    if matrix.shape[1] < 2:
        raise DataError(f"{name} has {matrix.shape[1]} question; need at least 2 to resample questions")
    if not np.all(np.isfinite(matrix)):
        raise DataError(f"{name} has non-finite values (NaN or inf)")
    if matrix.min() < 0.0 or matrix.max() > 1.0:
        raise DataError(
            f"{name} must be per-question scores in [0, 1]; got values in "
            f"[{matrix.min():g}, {matrix.max():g}] (0..100 scores? divide by 100)"
        )
    return matrix


def _check_files(scores: Sequence[npt.ArrayLike], name: str) -> list[np.ndarray]:
    """One checked ``(n_seeds, n_questions_k)`` matrix per file, all with the same number of seeds."""
    # A 3-D array is a stack of equal-sized files; a 2-D one is a single file passed by mistake.
    stacked = isinstance(scores, np.ndarray) and scores.ndim == 3
    if not stacked and (isinstance(scores, np.ndarray | str) or not isinstance(scores, Sequence)):
        raise DataError(f"{name} must be a list of matrices, one (n_seeds, n_questions) per file")
    if len(scores) == 0:
        raise DataError(f"{name} is empty; need at least one file")
    matrices = [_check_scores(matrix, f"{name}[{k}]") for k, matrix in enumerate(scores)]
    seeds = {matrix.shape[0] for matrix in matrices}
    if len(seeds) > 1:
        raise DataError(
            f"{name}: every file must be scored by the same seeds; got {sorted(seeds)} rows across files"
        )
    return matrices


def _bootstrap_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` means of resamples (with replacement) of the 1-D ``values``, chunked by memory."""
    n = values.size
    means = np.empty(n_boot, dtype=np.float64)
    rows_per_chunk = max(1, _CHUNK_BYTES // (16 * n))
    for start in range(0, n_boot, rows_per_chunk):
        stop = min(n_boot, start + rows_per_chunk)
        means[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return means


def _finite_vector(values: npt.ArrayLike, name: str, *, drop: bool = True) -> np.ndarray:
    """``values`` as a 1-D float64 array without infinities; NaN (undefined) dropped when ``drop``."""
    try:
        vector = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a 1-D numeric array, one value per question") from None
    if vector.ndim != 1:
        raise DataError(f"{name} must be 1-D, one value per question; got shape {vector.shape}")
    if np.isinf(vector).any():
        raise DataError(f"{name} has infinite values")
    return vector[np.isfinite(vector)] if drop else vector
