"""The plot command: panels and lines of the figures, output formats, the table, one-line errors.

Synthetic run directories (tests/test_results.py writes them) cover multi-seed runs and the
reference; one real tiny point-robot run, shared by the module, checks that what the run
command writes is what the plot command reads.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.collections import PolyCollection

from experiments import plot, results, run
from tests.test_results import _ref_by_hand, write_run
from tests.tiny import FLAGS

STEPS = np.array([50_000, 150_000, 250_000, 350_000])


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Three runs: cheetah-dir with 3 seeds and with 1, point-robot with 2 (and online returns)."""
    root = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(0)
    three = write_run(str(root / "three"), "cheetah-dir", {
        s: (STEPS + 100 * s, 400 + STEPS / 1000 + rng.normal(0, 30, 4)) for s in range(3)})
    one = write_run(str(root / "one"), "cheetah-dir", {7: (STEPS, 300 + STEPS / 2000)})
    online = {1: [-20.0, -18.0, -12.0, -11.0], 2: [-19.0, -15.0, -8.0, -7.0]}
    point = write_run(str(root / "point"), "point-robot", {
        0: ([1000, 2000], [-20.0, -15.0]), 1: ([1000, 2000], [-18.0, -13.0])},
        online=online, num_exp_traj_eval=2)
    return {"three": three, "one": one, "point": point, "root": root}


def _legend(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def _bands(ax):
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def test_curves_one_panel_per_task_with_bands_reference_and_baselines(synthetic):
    runs = [results.load_run(synthetic[k]) for k in ("three", "one", "point")]
    fig = plot.curves_figure(runs, ["cheetah-dir", "point-robot"])
    cheetah, point = fig.axes
    assert (cheetah.get_title(), point.get_title()) == ("cheetah-dir", "point-robot")
    # two runs, the official mean, ProMP, MAML and RL2 lines; bands: 3-seed run and official std
    assert len(cheetah.get_lines()) == 6 and len(_bands(cheetah)) == 2
    assert len(point.get_lines()) == 1 and len(_bands(point)) == 1  # no reference for point robots
    labels = _legend(cheetah)
    assert "three (mean of 3 seeds, 95% bootstrap CI)" in labels
    assert "one (1 seed, no band)" in labels
    assert any(t.startswith("PEARL paper (official, mean ± std of 5 runs)") for t in labels)
    assert sum(t.startswith(("ProMP final", "MAML final", "RL2 final")) for t in labels) == 3
    mean = results.mean_curve(runs[0])
    np.testing.assert_allclose(cheetah.get_lines()[0].get_ydata(), mean.mean)
    band_y = _bands(cheetah)[0].get_paths()[0].vertices[:, 1]
    assert band_y.min() == pytest.approx(mean.ci_low.min()) and band_y.max() == pytest.approx(mean.ci_high.max())


def test_no_reference_and_log_x(synthetic):
    fig = plot.curves_figure([results.load_run(synthetic["one"])], ["cheetah-dir"], reference=False, log_x=True)
    (ax,) = fig.axes
    assert len(ax.get_lines()) == 1 and not _bands(ax) and ax.get_xscale() == "log"


def test_online_figure_marks_prior_trajectories(synthetic):
    fig = plot.online_figure([results.load_run(synthetic["point"])])
    (ax,) = fig.axes
    line, prior = ax.get_lines()
    np.testing.assert_allclose(line.get_ydata(), [-19.0, -15.0, -8.0, -7.0])  # iteration 2, both seeds
    np.testing.assert_allclose(prior.get_xdata(), [1, 2])  # hollow markers on the prior trajectories
    assert prior.get_markerfacecolor() == "white" and prior.get_linestyle() == "None"
    assert len(_bands(ax)) == 1 and "trajectories 1-2: z from the prior (exploration)" in _legend(ax)
    first = plot.online_figure([results.load_run(synthetic["point"])], iteration=1)
    np.testing.assert_allclose(first.axes[0].get_lines()[0].get_ydata(), [-20.0, -18.0, -12.0, -11.0])


@pytest.mark.parametrize("name, magic", [("c.png", b"\x89PNG"), ("c.svg", b"<?xml"), ("c.pdf", b"%PDF"),
                                         ("c", b"\x89PNG")])
def test_output_format_follows_the_suffix(synthetic, tmp_path, capsys, name, magic):
    out = tmp_path / "sub" / name
    assert plot.main([synthetic["one"], "--out", str(out)]) == 0
    written = str(out) if out.suffix else str(out) + ".png"
    with open(written, "rb") as f:
        assert f.read(5).startswith(magic)
    assert capsys.readouterr().out.strip() == f"wrote {written}"


def test_table_is_printed_and_written_next_to_out(synthetic, tmp_path, capsys):
    out = tmp_path / "curves.png"
    assert plot.main([synthetic["three"], synthetic["one"], "--table", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    md = (tmp_path / "curves-table.md").read_text()
    assert md in printed and (tmp_path / "curves-table.csv").is_file()
    rows = [r for r in md.splitlines() if r.startswith("| cheetah-dir |")]
    assert len(rows) == 8  # 2 runs x (100k, 300k, 1M, last common)
    m, s = _ref_by_hand("cheetah-dir", 100_000)  # ours there: 300 + 100k / 2000 = 350
    assert f"| one | 100k | 100,000 | 350.0 (1 seed) | {m:.1f} ± {s:.1f} (5 runs) | {(350 - m) / s:+.2f} |" in md
    assert rows[2].split("|")[5].strip() == "n/a"  # 1M is beyond our runs


def test_reference_alone_for_tasks_without_runs(tmp_path, capsys):
    out = tmp_path / "ref.png"
    assert plot.main(["--task", "ant-dir,hopper-rand-params", "--log-x", "--out", str(out)]) == 0
    assert out.is_file()
    ant, hopper = plot.curves_figure([], ["ant-dir", "hopper-rand-params"], log_x=True).axes
    assert len(ant.get_lines()) == 4 and len(_bands(ant)) == 1 and ant.get_xscale() == "log"
    # hopper: RL2's final return alone, so no env-step axis
    assert _legend(hopper) == ["RL2 final, after 40M steps (3 runs)"] and not _bands(hopper)
    assert len(hopper.get_xticks()) == 0 and "final returns only" in hopper.get_xlabel()


@pytest.mark.parametrize("args, message", [
    (["{root}/missing"], "not a directory"),
    (["{root}"], "not a run directory"),
    (["--task", "cheetah-speed"], "--task=cheetah-speed: unknown task; valid: cheetah-dir"),
    (["--task", "point-robot"], "--task=point-robot: nothing to draw"),
    (["{one}", "--out", "c.jpg"], "--out=c.jpg: unsupported format '.jpg'"),
    (["{one}", "--iteration", "2"], "--iteration=2: only meaningful with --online"),
    (["{point}", "--online", "--iteration", "9"], "--iteration=9: "),
    (["{one}", "--online"], "no online-test returns saved yet"),
    ([], "no RUN_DIR given"),
    (["{one}", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_errors_are_one_line_with_status_2(synthetic, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)  # nothing may be written, even by mistake, next to the tests
    argv = [a.format(**{k: str(v) for k, v in synthetic.items()}) for a in args]
    assert plot.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert message in captured.err and not os.listdir(tmp_path)


def test_command_line_exit_status(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "experiments.plot", str(tmp_path / "nothing")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"error: {tmp_path / 'nothing'}: not a directory\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tiny") / "run")
    assert run.main(FLAGS + [f"--out-dir={out}"]) == 0  # the programs test_run compiles
    return out


def test_a_real_run_is_read_and_drawn(tiny_run, tmp_path, capsys):
    loaded = results.load_run(tiny_run)
    its, steps, rets = loaded.common()
    assert its.tolist() == [1, 2] and loaded.task == "point-robot" and len(loaded.seeds) == 1
    assert steps[0, 0] < steps[0, 1] and np.isfinite(rets).all()
    fig = plot.curves_figure([loaded], ["point-robot"])
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), rets[0])
    online = results.online_returns(loaded)
    # the tiny preset: 60 eval steps at horizon 20 = 3 trajectories, the first with prior z
    assert online.iteration == 2 and online.returns.shape == (1, 3) and online.num_exploration == 1
    assert online.returns[0, -1] == pytest.approx(rets[0, -1], rel=1e-6)  # the last one is the metric
    assert plot.main([tiny_run, "--table", "--out", str(tmp_path / "c.png")]) == 0
    assert plot.main([tiny_run, "--online", "--out", str(tmp_path / "o.svg")]) == 0
    assert f"| {steps[0, 1]:,.0f} | {rets[0, 1]:.1f} (1 seed) |" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["c-table.csv", "c-table.md", "c.png", "o.svg"]
