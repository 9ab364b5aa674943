"""Watch a trained policy: one meta-test adaptation run on a MuJoCo task, as a web page or a GIF.

    python -m experiments.render RUN_DIR --task-id K [--seed S] [--out rollout.html]
    python -m experiments.render RUN_DIR --task-id K --out rollout.gif   # needs OpenGL

The run is the evaluation protocol's adaptation run on test task K (experiments/trained.py),
every trajectory in order, prior-z exploration first. `.html` is brax's viewer: one file that
holds the model and every frame (the bodies' positions and orientations, from the run's joint
positions), played by three.js in the browser; its scripts load from public CDNs, so opening
the page needs a network connection. No OpenGL is needed on this machine. `.gif` uses MuJoCo's
offscreen renderer, which needs an OpenGL backend (MUJOCO_GL=egl with a GPU driver, or
MUJOCO_GL=osmesa); when none starts, the command says so in one line. The point robots have a
figure of their own: `python -m experiments.plot RUN_DIR --posterior --task-id K`. Bad input
prints one line `error: ...` on stderr and exits with status 2.
"""
from __future__ import annotations

import argparse
import contextlib
import html as html_text
import io
import os
import sys
import warnings

import numpy as np

from experiments import results, trained

FORMATS = (".html", ".gif")
GIF_SIZE = (480, 320)  # width, height


class UsageError(ValueError):
    """A bad command line; its str is one line."""


def body_poses(mj_model, qpos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World positions (S, nbody-1, 3) and quaternions (S, nbody-1, 4) of every body but the
    world, for each row of joint positions (S, nq): MuJoCo's forward kinematics on the host."""
    import mujoco

    data = mujoco.MjData(mj_model)
    pos, quat = [], []
    for q in np.asarray(qpos, np.float64):
        data.qpos[:] = q
        mujoco.mj_kinematics(mj_model, data)
        pos.append(data.xpos[1:].copy())
        quat.append(data.xquat[1:].copy())
    return np.stack(pos), np.stack(quat)


class _Frame:
    """What brax's viewer reads of a state: `x`, the bodies' transforms."""

    def __init__(self, x):
        self.x = x


def html_page(env, qpos: np.ndarray, caption: str) -> str:
    """brax's viewer page for `env`'s model playing the frames `qpos` (S, nq), one per env step."""
    from brax.base import Transform
    from brax.io import html, mjcf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # brax's notice that its own physics is unmaintained
        system = mjcf.load_model(env.mj_model)
    system = system.replace(opt=system.opt.replace(timestep=env.dt))  # the viewer's clock: env steps
    pos, quat = body_poses(env.mj_model, qpos)
    page = html.render(system, [_Frame(Transform(pos=p, rot=q)) for p, q in zip(pos, quat)],
                       height="100vh", colab=False)
    box = ("<div id=\"pearl-caption\" style=\"position:absolute;top:0;left:0;z-index:10;max-width:45%;"
           "padding:6px 10px;background:rgba(255,255,255,0.85);font:12px sans-serif\">" + caption + "</div>")
    return page.replace("<body>", "<body>\n" + box, 1)


def caption(policy: trained.Trained, run: trained.AdaptationRun, dt: float) -> str:
    """HTML text: which run this is and when each trajectory plays (seconds on the viewer's clock)."""
    c = policy.config
    lines = [f"<b>{html_text.escape(c.task)}</b>, test task {run.task_index}, seed {policy.seed}, "
             f"checkpoint of iteration {policy.iteration}"]
    returns, start = run.returns(), 0
    for k in range(run.num_trajs):
        n = int(np.sum(run.traj_index == k))
        kind = "z from the prior" if k < run.num_exploration else "z from the posterior"
        lines.append(f"trajectory {k + 1} ({kind}): frames {start}-{start + n - 1}, "
                     f"{start * dt:.2f}-{(start + n) * dt:.2f} s, return {returns[k]:.1f}")
        start += n
    return "<br>".join(lines)


def gl_problem() -> str | None:
    """None when MuJoCo's offscreen renderer starts here, else what failed, in a few words."""
    backend = os.environ.get("MUJOCO_GL") or "glfw (the default)"
    hook = sys.unraisablehook
    sys.unraisablehook = lambda _: None  # a failed context also complains from its finaliser
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            import mujoco

            model = mujoco.MjModel.from_xml_string("<mujoco><worldbody/></mujoco>")
            renderer = mujoco.Renderer(model, 8, 8)
            renderer.close()
        return None
    except Exception as exc:  # noqa: BLE001 - every failure to start means: no usable backend
        return f"MUJOCO_GL={backend} gave {type(exc).__name__}"
    finally:
        import gc

        gc.collect()
        sys.unraisablehook = hook


def gif_frames(env, qpos: np.ndarray, size=GIF_SIZE):
    """RGB frames (H, W, 3) of the frames `qpos`, a camera following the first body."""
    import mujoco

    model, data = env.mj_model, mujoco.MjData(env.mj_model)
    camera = mujoco.MjvCamera()
    camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
    camera.trackbodyid = 1
    camera.distance = 2.5 * float(model.stat.extent)
    camera.elevation = -20.0
    camera.azimuth = 90.0
    renderer = mujoco.Renderer(model, size[1], size[0])
    try:
        for q in np.asarray(qpos, np.float64):
            data.qpos[:] = q
            mujoco.mj_forward(model, data)
            renderer.update_scene(data, camera)
            yield renderer.render().copy()
    finally:
        renderer.close()


def write_gif(path: str, frames, dt: float) -> int:
    """An endlessly looping GIF of `frames` (H, W, 3 uint8), each shown `dt` seconds (GIF
    timing has 10 ms steps). Returns the frame count."""
    from PIL import Image

    images = [Image.fromarray(np.asarray(f, np.uint8)) for f in frames]
    if not images:
        raise UsageError(f"--out={path}: the run has no frames")
    images[0].save(path, save_all=True, append_images=images[1:], duration=max(10, round(dt * 100) * 10),
                   loop=0, optimize=False)
    return len(images)


def _parser() -> argparse.ArgumentParser:
    class Parser(argparse.ArgumentParser):
        def error(self, message):  # argparse would print usage and a second line
            raise UsageError(message)

    p = Parser(prog="python -m experiments.render",
               description="One meta-test adaptation run of a trained policy on a MuJoCo task.")
    p.add_argument("run", metavar="RUN_DIR", help="a single-seed or multi-seed run directory with a checkpoint")
    p.add_argument("--task-id", type=int, required=True, metavar="K",
                   help="the test task, an index 0..n_test-1 into the run's test tasks")
    p.add_argument("--seed", type=int, metavar="S", help="this seed of a multi-seed run (default: its first)")
    p.add_argument("--out", default="rollout.html", help="rollout.html (brax's viewer, default) or rollout.gif")
    return p


def _run(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    suffix = os.path.splitext(args.out)[1].lower()
    if suffix not in FORMATS:
        raise UsageError(f"--out={args.out}: unsupported format {suffix or '(none)'!r}; use {', '.join(FORMATS)}")
    if suffix == ".gif" and (problem := gl_problem()) is not None:
        raise UsageError(f"--out={args.out}: MuJoCo's offscreen renderer needs OpenGL and found none ({problem}; "
                         "set MUJOCO_GL=egl with a GPU driver or MUJOCO_GL=osmesa with OSMesa installed); "
                         "write an .html instead")
    config = trained.read_config(args.run)
    if config.task in trained.POINT_TASKS:
        raise UsageError(f"{args.run}: a {config.task} run has no MuJoCo model to render; draw it with "
                         f"python -m experiments.plot {args.run} --posterior --task-id {args.task_id}")
    trained.pick_seed(config, args.seed, args.run)
    with contextlib.redirect_stdout(io.StringIO()):  # mjx's notice about its optional warp backend
        from mujoco import mjx  # noqa: F401
    trained.check_task_index(config, args.task_id)
    policy = trained.load(args.run, args.seed, config)
    run = trained.adaptation_run(policy, args.task_id, observe=lambda state: state.physics.qpos)
    env = policy.trainer.env
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    if suffix == ".html":
        with open(args.out, "w") as f:
            f.write(html_page(env, run.observed, caption(policy, run, env.dt)))
        frames = len(run.observed)
    else:
        frames = write_gif(args.out, gif_frames(env, run.observed), env.dt)
    print(f"wrote {args.out}: {config.task}, test task {args.task_id}, seed {policy.seed}, checkpoint of iteration "
          f"{policy.iteration}, {run.num_trajs} trajectories, {frames} frames of {env.dt:g} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(argv)
    except (UsageError, results.ResultsError, OSError) as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
