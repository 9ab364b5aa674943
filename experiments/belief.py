"""PEARL's belief in goal space, for the point robots: a linear probe and the posterior-sampling figure.

z has `latent_size` (5) dimensions and no fixed meaning, so the belief q(z | context) is shown
through a probe: an affine least-squares map from posterior means to goal positions, fitted on
the training tasks (their posteriors given contexts drawn from their encoder buffers, exactly
as training draws them). Its error is reported on held-out training tasks (5-fold by task)
next to chance, the error of always answering the mean training goal; a probe no better than
chance means the figure's belief panel shows nothing about the goal. docs/results.md explains
how to read the figure.
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np
from matplotlib import cm, colors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Rectangle
from matplotlib.ticker import MaxNLocator

from experiments.trained import AdaptationRun, Trained
from pearl_jax import posterior
from pearl_jax.collect import sample_encoder_context

CONTEXT_DRAWS = 8  # contexts per training task for the probe's fit
BELIEF_SAMPLES = 64  # samples of z drawn from each belief
FOLDS = 5
PROBE_KEY, SAMPLES_KEY = 1, 2  # fixed draws: the same run always gives the same figure
_PRIOR_COLOR = "0.3"


@dataclass(frozen=True)
class Probe:
    """goal ≈ [z, 1] @ weights, fitted by least squares."""

    weights: np.ndarray  # (L + 1, G)
    cv_error: float  # mean distance probe(z) to the goal on held-out tasks
    chance_error: float  # mean distance to the held-out goal of the training folds' mean goal
    n_tasks: int

    def __call__(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, float)
        return z @ self.weights[:-1] + self.weights[-1]


def _lstsq(z: np.ndarray, goals: np.ndarray) -> np.ndarray:
    design = np.concatenate([z, np.ones((z.shape[0], 1))], axis=1)
    return np.linalg.lstsq(design, goals, rcond=None)[0]


def fit_probe(z: np.ndarray, goals: np.ndarray, task_of_row: np.ndarray, folds: int = FOLDS) -> Probe:
    """The probe from rows of (posterior mean z (N, L), goal (N, G)), with its held-out error:
    tasks (`task_of_row` (N,)) are split into `folds` groups, each predicted by a fit on the rest."""
    z, goals, task_of_row = np.asarray(z, float), np.asarray(goals, float), np.asarray(task_of_row)
    tasks = np.unique(task_of_row)
    fold_of_task = dict(zip(tasks.tolist(), np.arange(tasks.size) % min(folds, tasks.size)))
    fold = np.array([fold_of_task[t] for t in task_of_row.tolist()])
    errors, chance = [], []
    for f in np.unique(fold):
        held, kept = fold == f, fold != f
        if not kept.any():
            continue
        w = _lstsq(z[kept], goals[kept])
        predicted = z[held] @ w[:-1] + w[-1]
        errors.append(np.linalg.norm(predicted - goals[held], axis=1))
        chance.append(np.linalg.norm(goals[kept].mean(axis=0) - goals[held], axis=1))
    cv = float(np.concatenate(errors).mean()) if errors else float("nan")
    ch = float(np.concatenate(chance).mean()) if chance else float("nan")
    return Probe(_lstsq(z, goals), cv, ch, int(tasks.size))


def training_probe(trained: Trained, draws: int = CONTEXT_DRAWS) -> Probe:
    """The probe fitted on every training task's belief: `draws` contexts per task, one z drawn
    from the posterior given each (what the policy acts on), against the task's goal."""
    tr, params = trained.trainer, trained.state.learner.params
    enc = trained.state.buffers.enc

    def sample(key):
        k_ctx, k_z = jax.random.split(key)
        ctx, mask = sample_encoder_context(tr.agent, enc, k_ctx, tr.train_ids, tr.config.embedding_batch_size)
        return posterior.sample_z(k_z, *tr.agent.infer_posterior(params["encoder"], ctx, mask))

    keys = jax.random.split(jax.random.key(PROBE_KEY), draws)
    z = np.asarray(jax.jit(jax.vmap(sample))(keys)).reshape(-1, tr.agent.config.latent_size)  # draw-major
    goals = np.asarray(tr.tasks)[np.asarray(tr.train_ids)]
    return fit_probe(z, np.tile(goals, (draws, 1)), np.tile(np.arange(goals.shape[0]), draws))


def belief_samples(run: AdaptationRun, n: int = BELIEF_SAMPLES) -> np.ndarray:
    """(K + 1, n, L) draws of z from the belief after 0..K trajectories."""
    eps = np.random.default_rng(SAMPLES_KEY).standard_normal((run.belief_mean.shape[0], n, run.belief_mean.shape[1]))
    return run.belief_mean[:, None] + np.sqrt(run.belief_var)[:, None] * eps


def trajectory_paths(run: AdaptationRun) -> list[np.ndarray]:
    """Positions visited by each trajectory, in order: (steps + 1, 2) each."""
    return [np.concatenate([run.obs[run.traj_index == k][:1], run.next_obs[run.traj_index == k]])
            for k in range(run.num_trajs)]


def _goal_region(ax, sparse: bool, train_goals: np.ndarray) -> None:
    """The task distribution: the training goals, on the upper unit half circle (sparse) or
    in the square [-1, 1]^2 (dense), as envs/point_robot.py draws them."""
    if sparse:
        a = np.linspace(0, np.pi, 200)
        ax.plot(np.cos(a), np.sin(a), color="0.75", lw=1, ls="--", gid="goal-region")
    else:
        ax.add_patch(Rectangle((-1, -1), 2, 2, fill=False, ec="0.75", lw=1, ls="--", gid="goal-region"))
    ax.plot(train_goals[:, 0], train_goals[:, 1], "o", mfc="none", mec="0.7", ms=3, mew=0.6, label="training goals",
            gid="train-goals")


def _goal(ax, goal, radius: float, sparse: bool) -> None:
    ax.add_patch(Circle(goal, radius, color="tab:red", alpha=0.12, lw=0))
    ax.plot(*goal, "*", color="tab:red", ms=14, mec="k", mew=0.6, gid="goal",
            label=f"goal (radius {radius:g}{': sparse reward inside' if sparse else ''})")


def posterior_figure(run: AdaptationRun, probe: Probe, trained: Trained) -> Figure:
    """Left: the adaptation run's trajectories in order. Right: the belief after each, in goal
    space through the probe (samples small, the mean large, linked in order)."""
    env, c = trained.trainer.env, trained.config
    sparse = bool(env.sparse)
    train_goals = np.asarray(trained.trainer.tasks)[np.asarray(trained.trainer.train_ids)]
    k, explore = run.num_trajs, run.num_exploration
    order = colors.Normalize(0.5, k + 0.5)  # trajectory number -> colour, shared with the colour bar
    shade = cm.viridis(order(np.arange(1, k + 1)))
    samples = probe(belief_samples(run))  # (K + 1, n, 2)
    means = probe(run.belief_mean)
    lo, hi = _view(run, samples, means, train_goals)
    width = 5.0  # inches per panel; the height follows the view's aspect
    fig = Figure(figsize=(2 * width + 1.4, 2.4 + np.clip(width * (hi - lo)[1] / (hi - lo)[0], 2.0, 6.0)),
                 layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)

    _goal_region(left, sparse, train_goals)
    for i, path in enumerate(trajectory_paths(run)):
        prior = i < explore
        left.plot(path[:, 0], path[:, 1], "--" if prior else "-", color=shade[i], lw=1.6, gid=f"trajectory-{i + 1}",
                  label=_range_label(i, explore, k))
    starts = np.array([p[0] for p in trajectory_paths(run)])
    left.plot(starts[:, 0], starts[:, 1], "o", color="k", ms=3, label="starts", gid="starts")
    _goal(left, run.task, env.goal_radius, sparse)
    returns = run.returns()
    left.set_title(f"{c.task}, test task {run.task_index}: {k} trajectories in order\n"
                   f"returns {returns[0]:.1f} (first) .. {returns[-1]:.1f} (last)", fontsize=10)

    _goal_region(right, sparse, train_goals)
    right.scatter(samples[0, :, 0], samples[0, :, 1], s=4, color=_PRIOR_COLOR, alpha=0.35, gid="belief-0",
                  label="prior N(0, I), before any trajectory")
    right.plot(means[1:, 0], means[1:, 1], "-", color="0.3", lw=0.8, gid="belief-path")
    for i in range(k):
        right.scatter(samples[i + 1, :, 0], samples[i + 1, :, 1], s=4, color=shade[i], alpha=0.35,
                      gid=f"belief-{i + 1}")
        right.plot(*means[i + 1], "o", color=shade[i], mec="k", mew=0.6, ms=7, gid=f"belief-mean-{i + 1}")
    _goal(right, run.task, env.goal_radius, sparse)
    right.set_title(f"belief q(z | context) after each trajectory, read as a goal by a linear probe\n"
                    f"probe error on held-out training tasks {probe.cv_error:.2f} (chance {probe.chance_error:.2f})",
                    fontsize=10)
    right.plot([], [], "o", color=shade[-1], mec="k", mew=0.6, label="posterior mean (samples: dots)")
    flat = samples.reshape(-1, 2)
    outside = float(np.mean(np.any((flat < lo) | (flat > hi), axis=1)))
    if outside > 0:
        share = f"{outside:.0%}" if outside >= 0.01 else "under 1%"
        right.plot([], [], " ", label=f"{share} of the belief samples lie outside the view")

    for ax in (left, right):
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_aspect("equal")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.grid(alpha=0.25)
        ax.xaxis.set_major_locator(MaxNLocator(6))
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    bar = fig.colorbar(cm.ScalarMappable(order, "viridis"), ax=[left, right],
                       shrink=0.6, ticks=range(1, k + 1) if k <= 12 else None)
    bar.set_label("trajectory (dashed: z from the prior)")
    return fig


def _range_label(i: int, explore: int, k: int) -> str | None:
    """One legend entry for the prior trajectories and one for the posterior ones."""
    if i == 0 and explore > 0:
        return "trajectory 1: z from the prior" if explore == 1 else f"trajectories 1-{explore}: z from the prior"
    if i == explore and i < k:
        return (f"trajectory {k}: z from the posterior" if i == k - 1
                else f"trajectories {i + 1}-{k}: z from the posterior")
    return None


def _view(run: AdaptationRun, samples: np.ndarray, means: np.ndarray, train_goals: np.ndarray):
    """(low, high) corners of the view both panels share: the goals and the paths, widened for
    the belief by at most the goal region's own size (a poor probe throws samples far out)."""
    core = np.concatenate([train_goals, run.obs, run.next_obs, run.task[None]])
    lo, hi = core.min(axis=0), core.max(axis=0)
    reach = (hi - lo).max()
    cloud = np.concatenate([samples.reshape(-1, 2), means])
    lo = np.maximum(np.minimum(lo, np.percentile(cloud, 5, axis=0)), lo - reach)
    hi = np.minimum(np.maximum(hi, np.percentile(cloud, 95, axis=0)), hi + reach)
    pad = 0.06 * (hi - lo).max()
    return lo - pad, hi + pad
