"""Overfitting statistics against published worked examples and independent implementations.

References used (each test quotes its source and figure):
- Bailey & Lopez de Prado (2014), "The Deflated Sharpe Ratio", numerical example: annualized SR 2.5
  from T = 1250 daily returns (250 days/year), skew -3, kurtosis 10, N = 100 trials with annualized
  V[SR] = 1/2 -> SR0 ~ 0.1132 per day, DSR ~ 0.9004; with N = 46 trials DSR ~ 0.9505. The same
  example is the test `test_dsr` of esvhd/pypbo (pypbo/tests/pbo_tests.py: 0.90039683444939034).
- Bailey & Lopez de Prado (2012), "The Sharpe Ratio Efficient Frontier": annualized SR 1.585 from
  24 monthly returns, skew -2.448, kurtosis 10.164 -> PSR(0) = 0.9132 (pypbo `test_psr`:
  0.91323430688486018).
- hudson-and-thames/mlfinlab, mlfinlab/tests/test_backtest_statistics.py: PSR(1.14 vs 1, T=250,
  normal) = 0.95727 and DSR(1.14, trial SRs [3.5, 1.01, 1.02], T=250) = 0.95836.
- esvhd/pypbo, pypbo/pbo.py `pbo()` (CSCV): transcribed below as `_pypbo_reference`.
- mrbcuda/pbo (the R package), R/pbo.R `pbo()`: transcribed below as `_r_pbo_phi`.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, special, stats

from vpt_ray.validation.overfitting import (
    SharpeStats,
    config_stability,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    sharpe_ratio,
)

# ------------------------------------------------------------------ PSR / DSR: published figures


def test_dsr_reproduces_bailey_lopez_de_prado_2014_numerical_example():
    # The Deflated Sharpe Ratio (2014), "A numerical example": SR 2.5 annualized over 5 years of
    # daily returns (T=1250, 250 days a year), skew -3, kurtosis 10, N=100 trials whose annualized
    # Sharpe ratios have variance 1/2. Paper: SR0 ~ 0.1132, SR ~ 0.1581 (per day), DSR ~ 0.9004.
    chosen = SharpeStats(sr=2.5 / math.sqrt(250), n_obs=1250, skew=-3.0, kurtosis=10.0)
    out = deflated_sharpe_ratio(chosen, n_trials=100, sr_variance=0.5 / 250, periods_per_year=250)
    assert out["sr"] == pytest.approx(0.1581, abs=1e-4)
    assert out["sr0"] == pytest.approx(0.1132, abs=1e-4)
    assert out["dsr"] == pytest.approx(0.9004, abs=1e-4)
    assert out["dsr"] == pytest.approx(0.90039683444939034, rel=1e-9)  # pypbo test_dsr
    assert out["sr_annualized"] == pytest.approx(2.5)
    # Same paper: had the strategist found it after only N=46 trials, DSR ~ 0.9505 (> 0.95).
    out46 = deflated_sharpe_ratio(chosen, n_trials=46, sr_variance=0.5 / 250)
    assert out46["dsr"] == pytest.approx(0.9505, abs=1e-4)


def test_psr_reproduces_sharpe_ratio_efficient_frontier_example():
    # The Sharpe Ratio Efficient Frontier (2012): annualized SR 1.585 from 24 monthly returns,
    # skew -2.448, kurtosis 10.164 -> PSR(0) = 0.9132 (pypbo test_psr: 0.91323430688486018).
    s = SharpeStats(sr=1.585 / math.sqrt(12), n_obs=24, skew=-2.448, kurtosis=10.164)
    assert probabilistic_sharpe_ratio(s, 0.0) == pytest.approx(0.91323430688486018, rel=1e-9)


def test_psr_and_dsr_match_mlfinlab_test_figures():
    # mlfinlab/tests/test_backtest_statistics.py: PSR(1.14 vs benchmark 1, 250 returns, normal)
    # = 0.95727; DSR with trial SR estimates [3.5, 1.01, 1.02] = 0.95836 (mlfinlab takes the
    # population std, ddof=0, of the estimates - we pass that variance explicitly).
    s = SharpeStats(sr=1.14, n_obs=250, skew=0.0, kurtosis=3.0)
    assert probabilistic_sharpe_ratio(s, 1.0) == pytest.approx(0.95727, abs=1e-4)
    trials = np.array([3.5, 1.01, 1.02])
    out = deflated_sharpe_ratio(s, n_trials=3, sr_variance=float(np.var(trials, ddof=0)))
    assert out["dsr"] == pytest.approx(0.95836, abs=1e-4)


def test_expected_max_sharpe_tracks_the_exact_expected_maximum():
    # Lopez de Prado's own check of the False Strategy approximation (script "On 20140607 by
    # lopezdeprado@lbl.gov", stefan-jansen/machine-learning-for-trading
    # 08_ml4t_workflow/01_multiple_testing/deflated_sharpe_ratio.py) compares it with a simulated
    # E[max] of N standard normals; here the exact E[max] by quadrature. pypbo test_expected_max:
    # 2.5306028932016846 for N=100.
    assert expected_max_sharpe(100, 1.0) == pytest.approx(2.5306028932016846, rel=1e-12)
    for n in (5, 10, 46, 100, 1000):
        exact = integrate.quad(
            lambda x, n=n: x * n * stats.norm.pdf(x) * stats.norm.cdf(x) ** (n - 1),
            -np.inf,
            np.inf,
        )[0]
        assert expected_max_sharpe(n, 1.0) == pytest.approx(exact, rel=0.03)
    # scales with the trials' standard deviation; a single trial involves no selection
    assert expected_max_sharpe(100, 4.0) == pytest.approx(2 * expected_max_sharpe(100, 1.0))
    assert expected_max_sharpe(1, 1.0) == 0.0
    # more trials -> higher bar
    bars = [expected_max_sharpe(n, 1.0) for n in (2, 10, 100, 1000)]
    assert bars == sorted(bars)


# ------------------------------------------------------------------ PSR / DSR: independent code


def _pypbo_psr(sharpe, t, skew, kurtosis, target_sharpe=0.0):
    """Transcribed from esvhd/pypbo pypbo/pbo.py `psr`."""
    value = (
        (sharpe - target_sharpe)
        * np.sqrt(t - 1)
        / np.sqrt(1.0 - skew * sharpe + sharpe**2 * (kurtosis - 1) / 4.0)
    )
    return stats.norm.cdf(value, 0, 1)


def _pypbo_dsr(test_sharpe, sharpe_std, n, t, skew, kurtosis):
    """Transcribed from esvhd/pypbo pypbo/pbo.py `dsr` and `expected_max`."""
    expected_max = (1 - np.euler_gamma) * special.ndtri(1 - 1.0 / n) + np.euler_gamma * (
        special.ndtri(1 - np.exp(-1) / n)
    )
    return _pypbo_psr(test_sharpe, t, skew, kurtosis, sharpe_std * expected_max)


def test_dsr_from_returns_matches_pypbo_on_seeded_trials():
    # 40 trials of 750 daily skewed, fat-tailed returns; the chosen one is the best in-sample.
    # pypbo's dsr_from_returns estimates moments with pandas (skew(), kurtosis() + 3) and the
    # trials' Sharpe std with ddof=1.
    rng = np.random.default_rng(20240607)
    rets = pd.DataFrame(
        0.0003 + 0.01 * (rng.standard_t(4, size=(750, 40)) - 0.3 * rng.exponential(1, (750, 40)))
    )
    sharpes = (rets.mean() / rets.std(ddof=1)).to_numpy()
    best = int(np.argmax(sharpes))
    r = rets[best]
    ref = _pypbo_dsr(
        sharpes[best],
        sharpe_std=np.std(sharpes, ddof=1),
        n=40,
        t=len(r),
        skew=r.skew(),
        kurtosis=r.kurtosis() + 3,
    )
    out = deflated_sharpe_ratio(r.to_numpy(), sharpes)
    assert out["dsr"] == pytest.approx(ref, rel=1e-10)
    assert out["sr"] == pytest.approx(sharpes[best], rel=1e-12)
    assert out["skew"] == pytest.approx(r.skew(), rel=1e-10)
    assert out["kurtosis"] == pytest.approx(r.kurtosis() + 3, rel=1e-10)
    assert out["n_trials"] == 40
    # the best of 40 skill-less-ish trials is not significant once deflated, though PSR(0) is high
    assert out["dsr"] < out["psr"]
    assert sharpe_ratio(r.to_numpy()) == pytest.approx(sharpes[best])


def test_dsr_of_the_best_noise_trial_is_not_significant():
    # Selection alone: the best of 50 zero-mean trials looks good (PSR vs 0 high) but deflates.
    rng = np.random.default_rng(7)
    rets = rng.normal(0.0, 0.01, size=(504, 50))
    sharpes = rets.mean(0) / rets.std(0, ddof=1)
    best = int(np.argmax(sharpes))
    out = deflated_sharpe_ratio(rets[:, best], sharpes)
    assert out["psr"] > 0.9
    assert out["dsr"] < 0.5
    assert out["sr0"] > 0


def test_dsr_of_a_real_edge_stays_significant():
    rng = np.random.default_rng(11)
    rets = rng.normal(0.0, 0.01, size=(1000, 30))
    rets[:, 3] += 0.0015  # per-day Sharpe ~0.15 (annualized ~2.4)
    sharpes = rets.mean(0) / rets.std(0, ddof=1)
    out = deflated_sharpe_ratio(rets[:, 3], sharpes)
    assert out["dsr"] > 0.95


def test_sharpe_inputs_are_validated():
    with pytest.raises(ValueError, match="kurtosis"):
        SharpeStats(sr=0.1, n_obs=100, skew=0.0, kurtosis=0.5)  # excess kurtosis passed by mistake
    with pytest.raises(ValueError, match="n_obs"):
        SharpeStats(sr=0.1, n_obs=1)
    with pytest.raises(ValueError, match="zero variance"):
        SharpeStats.from_returns(np.zeros(10))
    with pytest.raises(ValueError, match="NaN"):
        SharpeStats.from_returns(np.array([0.1, np.nan, 0.2, 0.0]))
    with pytest.raises(ValueError, match="1-D"):
        SharpeStats.from_returns(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="n_trials and sr_variance"):
        deflated_sharpe_ratio(SharpeStats(0.1, 100))
    with pytest.raises(ValueError, match="n_trials"):
        expected_max_sharpe(0, 1.0)
    with pytest.raises(ValueError, match="sr_variance"):
        expected_max_sharpe(10, -1.0)


# ------------------------------------------------------------------ PBO: independent code


def _pypbo_reference(m: np.ndarray, s: int, metric_func, threshold: float) -> dict:
    """Transcribed from esvhd/pypbo pypbo/pbo.py `pbo()` (serial branch; plotting, stochastic
    dominance and pandas handling left out). Kept independent of vpt_ray.validation.overfitting."""
    t, n = m.shape
    residual = t % s
    if residual != 0:
        m = m[residual:]
        t, n = m.shape
    sub_t = t // s
    ms = []
    ms_values = []
    for i in range(s):
        start, end = i * sub_t, (i + 1) * sub_t
        ms.append((i, m[start:end, :]))
        ms_values.append(m[start:end, :])
    ms_values = np.array(ms_values)
    cs = list(itertools.combinations(ms, s // 2))
    ms_index = set(range(len(ms)))
    j_is, j_oos = [], []
    for c in cs:
        order = [x for x, _ in c]
        sort_ind = np.argsort(order)
        cs_values = np.array([v for _, v in c])
        j_is.append(np.concatenate(cs_values[sort_ind, :]))
        cs_bar_index = sorted(ms_index - set(order))
        j_oos.append(np.concatenate(ms_values[cs_bar_index, :]))
    r = [metric_func(j) for j in j_is]
    r_bar = [metric_func(j) for j in j_oos]
    r_rank = [stats.rankdata(x) for x in r]
    r_bar_rank = [stats.rankdata(x) for x in r_bar]
    rn = [np.argmax(x) for x in r_rank]
    rn_bar = [r_bar_rank[i][rn[i]] for i in range(len(r_bar_rank))]
    w_bar = [float(x) / (n + 1) for x in rn_bar]
    logits = [special.logit(w) for w in w_bar]
    phi = np.array([1.0 if lam <= 0 else 0.0 for lam in logits]) / len(cs)
    r_n_star = np.array([r[i][rn[i]] for i in range(len(r))])
    r_bar_n_star = np.array([r_bar[i][rn[i]] for i in range(len(r_bar))])
    lm = stats.linregress(x=r_n_star, y=r_bar_n_star)
    prob_oos_loss = np.sum([1.0 if x < threshold else 0.0 for x in r_bar_n_star]) / len(
        r_bar_n_star
    )
    return {
        "pbo": float(np.sum(phi)),
        "logits": np.array(logits),
        "is_perf": r_n_star,
        "oos_perf": r_bar_n_star,
        "slope": lm.slope,
        "intercept": lm.intercept,
        "prob_oos_loss": prob_oos_loss,
    }


def _pypbo_sharpe(x: np.ndarray) -> np.ndarray:
    """pypbo.perf.sharpe_iid(..., bench=0, factor=1) for a numpy matrix: mean / std(ddof=1)."""
    return np.mean(x, axis=0) / np.std(x, axis=0, ddof=1)


def _r_pbo_phi(m: np.ndarray, s: int, f) -> float:
    """Transcribed from mrbcuda/pbo R/pbo.R `pbo()`: phi = share of splits with lambda <= 0, where
    omega_bar = rank(R_bar)[n*] / N (the R package divides by N, the paper by N + 1; the two agree
    whenever N is even, since ranks are integers)."""
    t, n = m.shape
    sn = t // s
    phis = []
    for is_i in itertools.combinations(range(1, s + 1), s // 2):
        is_idx = np.concatenate([np.arange(sn * i - sn, sn * i) for i in is_i])
        os_idx = np.setdiff1d(np.arange(t), is_idx)
        r, r_bar = f(m[is_idx]), f(m[os_idx])
        n_star = int(np.argmax(r))
        omega = stats.rankdata(r_bar)[n_star] / len(r_bar)
        with np.errstate(divide="ignore"):
            lam = np.log(omega / (1 - omega))
        phis.append(1.0 if lam <= 0 else 0.0)
    return float(np.mean(phis))


def _seeded_trials(seed: int, t: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # trials share a market factor and have different small drifts and fat tails
    market = rng.normal(0.0002, 0.008, size=(t, 1))
    return (
        market * rng.uniform(0.2, 1.0, n)
        + 0.01 * rng.standard_t(5, size=(t, n)) / 1.3
        + (rng.normal(0, 0.0004, n))
    )


def test_pbo_matches_pypbo_on_a_seeded_matrix():
    # T=803 is not a multiple of S=10: both drop the oldest 3 rows.
    m = _seeded_trials(seed=3, t=803, n=15)
    ref = _pypbo_reference(m, 10, _pypbo_sharpe, threshold=0.0)
    out = probability_of_backtest_overfitting(m, n_partitions=10)
    assert out["n_splits"] == math.comb(10, 5) == len(ref["logits"])
    assert out["n_rows_dropped"] == 3 and out["n_rows_used"] == 800
    np.testing.assert_allclose(out["logits"], ref["logits"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["is_perf"], ref["is_perf"], rtol=1e-9)
    np.testing.assert_allclose(out["oos_perf"], ref["oos_perf"], rtol=1e-9)
    assert out["pbo"] == pytest.approx(ref["pbo"], abs=1e-12)
    assert out["prob_oos_loss"] == pytest.approx(ref["prob_oos_loss"], abs=1e-12)
    assert out["slope"] == pytest.approx(ref["slope"], rel=1e-8)
    assert out["intercept"] == pytest.approx(ref["intercept"], rel=1e-8, abs=1e-12)


def test_pbo_callable_metric_matches_pypbo_and_the_fast_path():
    m = _seeded_trials(seed=5, t=480, n=12)

    def mean_return(x: np.ndarray) -> np.ndarray:
        return x.mean(axis=0)

    ref = _pypbo_reference(m, 8, mean_return, threshold=0.0)
    generic = probability_of_backtest_overfitting(m, n_partitions=8, metric=mean_return)
    fast = probability_of_backtest_overfitting(m, n_partitions=8, metric="mean")
    for out in (generic, fast):
        np.testing.assert_allclose(out["logits"], ref["logits"], atol=1e-12)
        np.testing.assert_allclose(out["oos_perf"], ref["oos_perf"], rtol=1e-9)
        assert out["pbo"] == pytest.approx(ref["pbo"], abs=1e-12)
    generic_sr = probability_of_backtest_overfitting(m, n_partitions=8, metric=_pypbo_sharpe)
    fast_sr = probability_of_backtest_overfitting(m, n_partitions=8)
    np.testing.assert_allclose(generic_sr["is_perf"], fast_sr["is_perf"], rtol=1e-9)
    assert generic_sr["pbo"] == fast_sr["pbo"]


def test_pbo_matches_the_r_package_for_an_even_number_of_trials():
    m = _seeded_trials(seed=9, t=400, n=20)
    out = probability_of_backtest_overfitting(m, n_partitions=8)
    assert out["pbo"] == pytest.approx(_r_pbo_phi(m, 8, _pypbo_sharpe), abs=1e-12)


# ------------------------------------------------------------------ PBO: sanity


def test_pbo_of_identical_noise_strategies_is_one_half_on_average():
    # N skill-less trials: the IS winner's OOS rank is uniform, so E[PBO] = 1/2 (Bailey et al.
    # 2015; the R package's own test asserts 0.47 < phi < 0.53 on one seeded noise matrix). A
    # single matrix's PBO varies a lot (splits share data), so average 60 matrices: the standard
    # error of that mean is ~0.027 (measured sd of one PBO ~0.2).
    pbos = []
    for seed in range(60):
        m = np.random.default_rng(seed).normal(0.0, 0.01, size=(320, 20))
        pbos.append(probability_of_backtest_overfitting(m, n_partitions=8)["pbo"])
    assert abs(np.mean(pbos) - 0.5) < 0.08


def test_pbo_is_near_zero_for_an_edge_that_persists():
    rng = np.random.default_rng(42)
    m = rng.normal(0.0, 0.01, size=(1000, 20))
    m[:, 7] += 0.002  # per-day Sharpe ~0.2 in every period
    out = probability_of_backtest_overfitting(m)  # S=16: 12,870 splits
    assert out["n_splits"] == 12870
    assert out["pbo"] < 0.05
    assert out["prob_oos_loss"] < 0.05
    assert out["mean_oos"] > 0.1


def test_pbo_flags_a_strategy_that_only_worked_in_one_regime():
    # Every trial is noise plus a drift that lasts for only a quarter of the sample at a
    # different time for each trial: the IS winner is whoever's regime fell in-sample.
    rng = np.random.default_rng(1)
    t, n = 800, 16
    m = rng.normal(0.0, 0.01, size=(t, n))
    for j in range(n):
        start = rng.integers(0, t - t // 4)
        m[start : start + t // 4, j] += 0.003
    out = probability_of_backtest_overfitting(m, n_partitions=8)
    assert out["pbo"] > 0.3
    assert out["slope"] < 0  # IS winners degrade out of sample


def test_pbo_inputs_are_validated():
    m = np.zeros((100, 5))
    with pytest.raises(ValueError, match="even"):
        probability_of_backtest_overfitting(m, n_partitions=5)
    with pytest.raises(ValueError, match="trials"):
        probability_of_backtest_overfitting(np.zeros((100, 1)))
    with pytest.raises(ValueError, match="too few"):
        probability_of_backtest_overfitting(np.zeros((20, 3)), n_partitions=16)
    with pytest.raises(ValueError, match="NaN"):
        probability_of_backtest_overfitting(np.full((100, 3), np.nan), n_partitions=4)
    with pytest.raises(ValueError, match="metric"):
        probability_of_backtest_overfitting(m, n_partitions=4, metric="sortino")
    # constant (never-trading) trials get Sharpe 0 instead of NaN
    out = probability_of_backtest_overfitting(m, n_partitions=4)
    assert np.isfinite(out["logits"]).all()


# ------------------------------------------------------------------ config stability


def test_config_stability_of_a_consistent_search():
    base = np.linspace(0.50, 0.60, 12)
    rng = np.random.default_rng(0)
    scores = base + rng.normal(0, 1e-4, size=(5, 12))  # every fold orders the trials alike
    out = config_stability(scores)
    assert out["chosen"] == 11
    assert out["ranks"] == [1.0] * 5
    assert out["top_hit_rate"] == 1.0
    assert out["n_top"] == 3  # ceil(0.25 * 12)
    assert out["kendall_tau"] > 0.9


def test_config_stability_of_a_noise_search():
    scores = np.random.default_rng(3).normal(0.5, 0.01, size=(8, 40))
    out = config_stability(scores)
    assert abs(out["kendall_tau"]) < 0.1
    assert out["rank_worst"] > 10  # the "best" trial is not reliably near the top


def test_config_stability_hand_example_and_lower_is_better():
    # 3 folds x 4 trials of log loss (lower is better); trial 1 is chosen.
    loss = np.array(
        [
            [0.70, 0.60, 0.65, 0.69],  # ranks of trial 1: 1
            [0.68, 0.66, 0.64, 0.70],  # 2
            [0.71, 0.69, 0.60, 0.72],  # 2
        ]
    )
    out = config_stability(loss, chosen=1, higher_is_better=False, top_fraction=0.25)
    assert out["ranks"] == [1.0, 2.0, 2.0]
    assert out["n_top"] == 1
    assert out["top_hit_rate"] == pytest.approx(1 / 3)
    taus = [stats.kendalltau(loss[a], loss[b]).statistic for a, b in [(0, 1), (0, 2), (1, 2)]]
    assert out["kendall_tau"] == pytest.approx(np.mean(taus))
    with pytest.raises(ValueError, match="chosen"):
        config_stability(loss, chosen=4)
    with pytest.raises(ValueError, match="n_trials"):
        config_stability(np.zeros((3, 1)))


# ---------------------------------------- the run's section (vpt_ray.validation.honesty)


def _search_result(daily: pd.DataFrame, folds: list[dict]):
    from vpt_ray.model.search_result import SearchResult

    n = daily.shape[1]
    return SearchResult(
        best_params={},
        best={"folds": folds},
        trials=pd.DataFrame({"status": ["completed"] * n}),
        fold_scores=np.tile(np.arange(n, dtype=float), (len(folds), 1)),
        daily_perf=daily,
    )


def test_daily_returns_keep_the_first_session():
    from vpt_ray.validation.honesty import daily_returns

    eq = pd.Series([101.0, 102.01, 100.9899])  # +1%, +1%, -1% from a capital of 100
    assert daily_returns(eq, 100.0) == pytest.approx([0.01, 0.01, -0.01])
    assert daily_returns(eq, None) == pytest.approx([0.01, -0.01])  # what the DSR used to see


def test_dsr_sees_every_backtest_day_and_the_trials_after_cost_spread():
    from vpt_ray.validation.honesty import overfitting_section

    rng = np.random.default_rng(3)
    daily = pd.DataFrame(rng.normal(0.001, 0.01, (64, 4)))  # 4 trials' validation days
    folds = [
        {"train_accuracy": 0.60, "val_accuracy": 0.55, "train_samples": 30_000,
         "val_samples": 9_000},
        {"train_accuracy": 0.58, "val_accuracy": 0.54, "train_samples": 40_000,
         "val_samples": 9_000},
    ]  # fmt: skip
    r = rng.normal(0.002, 0.01, 40)
    r[0] = 0.05  # a big first day: dropping it would change the Sharpe
    equity = pd.Series(100_000 * np.cumprod(1 + r))
    out = overfitting_section(
        _search_result(daily, folds), equity, capital=100_000, cv_overlap=1 / 3
    )
    assert out["dsr_days"] == 40
    assert out["sharpe_annual"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252))
    trial_sr = daily.mean() / daily.std(ddof=1)
    assert out["dsr_trials_sr_variance"] == pytest.approx(float(np.var(trial_sr, ddof=1)))
    ref = deflated_sharpe_ratio(r, trial_sr.to_numpy(), n_trials=4)
    assert out["dsr"] == pytest.approx(ref["dsr"])
    # the gap and its SE: binomial on each fold's effective samples (a third: overlapping labels)
    assert out["train_val_gap"] == pytest.approx(0.045)
    se = [
        math.sqrt(0.6 * 0.4 / 10_000 + 0.55 * 0.45 / 3_000),
        math.sqrt(0.58 * 0.42 / (40_000 / 3) + 0.54 * 0.46 / 3_000),
    ]
    assert out["train_val_gap_se"] == pytest.approx(math.sqrt(se[0] ** 2 + se[1] ** 2) / 2)
    # trials told apart from noise? spread of their Sharpe vs the SE of one over 64 days
    assert out["trial_sharpe_se"] == pytest.approx(
        math.sqrt((1 + float(np.median(trial_sr)) ** 2 / 2) / 63)
    )
    assert out["trials_distinct"] == (out["trial_sharpe_spread"] >= out["trial_sharpe_se"])


def test_pbo_reports_how_the_selected_configuration_fared_out_of_sample():
    """Trial 0 (the search's choice) is a loser in every out-of-sample half; trial 2 wins."""
    rng = np.random.default_rng(0)
    base = rng.normal(0, 0.01, (64, 1))
    perf = np.hstack([base - 0.004, base + 0.0, base + 0.004]) + rng.normal(0, 0.001, (64, 3))
    out = probability_of_backtest_overfitting(perf, n_partitions=8, chosen=0)
    assert out["chosen_oos_rank"] == pytest.approx(0.25)  # rank 1 of 3: 1 / (3 + 1)
    assert out["chosen_below_median"] == 1.0
    assert out["chosen_prob_oos_loss"] > 0.5
    assert out["pbo"] == 0.0  # the in-sample winner (trial 2) also wins out of sample
    with pytest.raises(ValueError, match="chosen must be a trial column"):
        probability_of_backtest_overfitting(perf, n_partitions=8, chosen=3)
