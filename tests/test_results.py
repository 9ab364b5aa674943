"""Reading runs, seed aggregation, the bootstrap band and the table, on run directories written here."""
import csv
import json
import math
import os
from importlib import resources

import numpy as np
import pytest

from experiments import reference_curves, results
from experiments.progress import ENV_STEPS, ITERATION, TEST_RETURN

HEADER = [ITERATION, ENV_STEPS, "Number of train steps total", TEST_RETURN]


def write_seed(path, task, seed, env_steps, returns, online=None, num_exp_traj_eval=2, tail=""):
    """A seed directory as the run command leaves it: config.json, progress.csv, online/*.npy."""
    os.makedirs(os.path.join(path, "online"), exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"task": task, "seed": seed, "max_path_length": 20,
                   "num_exp_traj_eval": num_exp_traj_eval, "num_steps_per_eval": 100}, f)
    with open(os.path.join(path, "progress.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for i, (s, r) in enumerate(zip(env_steps, returns), start=1):
            w.writerow([i, s, 10 * i, r])
        f.write(tail)
    for iteration, values in (online or {}).items():
        np.save(os.path.join(path, "online", f"online-test-iter{iteration:05d}.npy"), np.asarray(values))
    return path


def write_run(path, task, curves, **kw):
    """curves: {seed: (env_steps, returns)}; more than one seed gives the seed-<s>/ layout."""
    if len(curves) == 1:
        (seed, (steps, rets)), = curves.items()
        return write_seed(path, task, seed, steps, rets, **kw)
    for seed, (steps, rets) in curves.items():
        write_seed(os.path.join(path, f"seed-{seed}"), task, seed, steps, rets, **kw)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"task": task, "seed": min(curves), "num_seeds": len(curves)}, f)
    return path


def test_cut_off_last_line_and_garbled_rows_are_dropped(tmp_path):
    # the killed process wrote "4,400" of its next row: a number that would parse, so only the
    # missing newline tells it is incomplete
    d = write_seed(str(tmp_path / "r"), "point-robot", 0, [100, 200, 300], [-20, -15, -12],
                   tail="9,garbled\r\n4,400")
    run = results.load_run(d)
    its, steps, rets = run.common()
    assert its.tolist() == [1, 2, 3]
    assert steps.tolist() == [[100, 200, 300]] and rets.tolist() == [[-20, -15, -12]]


def test_multi_seed_run_uses_iterations_all_seeds_logged(tmp_path):
    d = write_run(str(tmp_path / "r"), "point-robot", {
        0: ([100, 200, 300], [1.0, 2.0, 3.0]),
        1: ([110, 210], [3.0, 6.0]),  # this seed was stopped one row earlier
    })
    run = results.load_run(d)
    assert [s.seed for s in run.seeds] == [0, 1] and run.task == "point-robot"
    curve = results.mean_curve(run)
    np.testing.assert_allclose(curve.env_steps, [105, 205])  # by iteration, mean env steps
    np.testing.assert_allclose(curve.mean, [2.0, 4.0])
    assert curve.n_seeds == 2


@pytest.mark.parametrize("make, message", [
    (lambda p: p, "not a directory"),
    (lambda p: os.makedirs(p) or p, "not a run directory"),
    (lambda p: write_seed(p, "point-robot", 0, [], []), "no evaluations yet"),
    (lambda p: write_seed(p, "point-robot", 0, [], [], tail="1,100,10,-3"), "no evaluations yet"),
])
def test_unreadable_runs_raise_one_line(tmp_path, make, message):
    path = make(str(tmp_path / "r"))
    with pytest.raises(results.ResultsError) as info:
        results.load_run(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_bootstrap_ci_covers_the_true_mean_and_shrinks_with_more_seeds():
    rng = np.random.default_rng(1)
    widths = {}
    for n in (5, 20, 80):
        sample = rng.normal(3.0, 1.0, size=n)
        lo, hi = results.bootstrap_ci(sample)
        assert lo < 3.0 < hi and lo < sample.mean() < hi
        widths[n] = hi - lo
    # the width falls like 1/sqrt(n): 4x the seeds, about half the width
    assert widths[80] < 0.75 * widths[20] < 0.75 * 0.75 * widths[5]
    assert results.bootstrap_ci(sample) == results.bootstrap_ci(sample)  # seeded: repeatable


def test_bootstrap_ci_coverage_is_near_nominal():
    rng = np.random.default_rng(2)
    covered = 0
    for _ in range(300):
        lo, hi = results.bootstrap_ci(rng.normal(0.0, 1.0, size=20), n_resamples=2000)
        covered += lo < 0.0 < hi
    assert 0.88 <= covered / 300 <= 0.98  # percentile bootstrap, n = 20: slightly below 95%


def test_bootstrap_band_resamples_whole_curves_and_one_seed_has_none():
    curves = np.random.default_rng(3).normal(size=(4, 600))  # wider than one memory chunk
    lo, hi = results.bootstrap_ci(curves, n_resamples=500)
    assert lo.shape == hi.shape == (600,) and np.all(lo <= curves.mean(0)) and np.all(curves.mean(0) <= hi)
    lo_j, hi_j = results.bootstrap_ci(curves[:, 417], n_resamples=500)  # same resamples, one column
    assert (lo[417], hi[417]) == (lo_j, hi_j)
    assert np.isnan(results.bootstrap_ci(curves[:1])[0]).all()


def _ref_by_hand(task, step):
    """The official mean and std at `step`: straight line between the two bracketing CSV rows."""
    path = resources.files("experiments.reference_curves").joinpath(
        f"oyster_paper_official__{task}.csv")
    rows = [[float(v) for v in r[:3]] for r in list(csv.reader(path.read_text().splitlines()))[1:]]
    (x0, m0, s0), (x1, m1, s1) = next((a, b) for a, b in zip(rows, rows[1:]) if a[0] <= step <= b[0])
    t = (step - x0) / (x1 - x0)
    return m0 + t * (m1 - m0), s0 + t * (s1 - s0)


def test_table_numbers_equal_a_hand_computation(tmp_path):
    d = write_run(str(tmp_path / "ours"), "cheetah-dir", {
        0: ([40_000, 120_000, 200_000], [10.0, 50.0, 70.0]),
        1: ([42_000, 122_000, 202_000], [20.0, 60.0, 100.0]),
    })
    rows = {r.point: r for r in results.table_rows([results.load_run(d)], ["cheetah-dir"])}
    assert list(rows) == ["100k", "300k", "1M", "last common"]
    at100 = rows["100k"]
    # seed 0: 10 + (60/80) * 40 = 40; seed 1: 20 + (58/80) * 40 = 49
    assert at100.mean == pytest.approx(44.5) and at100.std == pytest.approx(math.sqrt(40.5))
    # two seeds: resampled means are 40, 44.5 or 49 with chances 1/4, 1/2, 1/4
    assert (at100.ci_low, at100.ci_high) == pytest.approx((40.0, 49.0))
    ref_mean, ref_std = _ref_by_hand("cheetah-dir", 100_000)
    assert (at100.ref_mean, at100.ref_std) == pytest.approx((ref_mean, ref_std))
    assert (round(ref_mean, 1), round(ref_std, 1)) == (533.6, 35.1)  # the value docs quote
    assert at100.diff_in_ref_std == pytest.approx((44.5 - ref_mean) / ref_std)
    last = rows["last common"]  # where the shorter seed ends: 200k; seed 1 there: 60 + 78/80 * 40
    assert last.env_steps == 200_000 and last.mean == pytest.approx((70 + 99) / 2)
    for point in ("300k", "1M"):  # not reached: no extrapolation
        assert math.isnan(rows[point].mean) and not math.isnan(rows[point].ref_mean)

    csv_path, md_path = results.write_table(list(rows.values()), str(tmp_path / "t"))
    with open(csv_path) as f:
        table = list(csv.DictReader(f))
    assert [r["mean"] for r in table] == ["44.5", "n/a", "n/a", "84.5"]
    assert table[0]["ci_low"] == "40" and table[0]["n_seeds"] == "2"
    md = open(md_path).read()
    assert "| 44.5 [40.0, 49.0] (2 seeds) |" in md and md.count("n/a") == 4


def test_online_returns_latest_common_or_chosen_iteration(tmp_path):
    d = write_run(str(tmp_path / "r"), "point-robot", {
        0: ([100, 200], [1, 2]), 1: ([100, 200], [1, 2])}, num_exp_traj_eval=1,
        online={1: [-9.0, -5.0, -4.0], 2: [-8.0, -3.0, -1.0]})
    os.remove(os.path.join(d, "seed-1", "online", "online-test-iter00002.npy"))
    run = results.load_run(d)
    latest = results.online_returns(run)
    assert latest.iteration == 1 and latest.num_exploration == 1
    np.testing.assert_allclose(latest.returns, [[-9, -5, -4], [-9, -5, -4]])
    with pytest.raises(results.ResultsError, match=r"--iteration=2: .* iterations 1$"):
        results.online_returns(run, 2)


def test_reference_data_ship_with_the_package():
    for task in ("cheetah-vel", "cheetah-dir", "ant-dir", "ant-goal", "humanoid-dir", "walker-rand-params"):
        ref = reference_curves.curve(task)
        assert ref.n_runs == 5 and np.all(np.diff(ref.env_steps) > 0) and np.all(ref.std > 0)
        assert set(reference_curves.baseline_finals(task)) == {"ProMP", "MAML", "RL2"}
    assert reference_curves.curve("point-robot") is None
    assert set(reference_curves.baseline_finals("hopper-rand-params")) == {"RL2"}
    assert reference_curves.baseline_finals("cheetah-vel")["RL2"].n_runs == 2
    assert math.isnan(reference_curves.curve("ant-dir", "released").std[0])
    assert "oyster_paper_official__" in reference_curves.readme()


def test_last_common_point_stops_where_the_reference_ends(tmp_path):
    d = write_run(str(tmp_path / "long"), "humanoid-dir", {0: ([500_000, 2_000_000], [300.0, 900.0])})
    last = results.table_rows([results.load_run(d)], ["humanoid-dir"])[-1]
    ref_end = reference_curves.curve("humanoid-dir").env_steps[-1]
    assert last.point == "last common" and last.env_steps == ref_end == 1_108_000
    assert last.mean == pytest.approx(300 + (ref_end - 500_000) / 1_500_000 * 600)
    assert last.ref_mean == reference_curves.curve("humanoid-dir").mean[-1]
