"""Watching a policy on a MuJoCo task: brax's HTML viewer page, the GIF path, one-line errors.

The module shares one hopper-rand-params run directory whose checkpoint holds a freshly
initialised (untrained) policy, written by the checkpointer the run command uses: rendering
reads checkpoints and rolls out the protocol; whether the policy learned does not matter here,
and training a MuJoCo task would cost minutes.
"""
import base64
import json
import os
import re
import subprocess
import sys
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import render, rundir
from experiments.configs import apply_preset, get_config
from pearl_jax.checkpoint import Checkpointer
from pearl_jax.train import Trainer

TASK = "hopper-rand-params"


def untrained_run(run_dir, config):
    """A run directory whose one checkpoint (iteration 0) holds fresh networks and empty buffers."""
    trainer = Trainer(config)

    def fill(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.split(jax.random.key(0), x.shape)
        return jnp.zeros(x.shape, x.dtype)

    state = jax.tree.map(fill, trainer.abstract_state())
    state = state.replace(learner=jax.vmap(trainer.agent.init)(jax.random.split(jax.random.key(1), trainer.slots)))
    rundir.write_configs(run_dir, trainer.config)
    with Checkpointer(rundir.checkpoint_dir(run_dir), keep=1) as ckpt:
        ckpt.save(0, state, {"iteration": 0})
    return run_dir


@pytest.fixture(scope="module")
def hopper(tmp_path_factory):
    # 250 eval steps at horizon 200 with one prior trajectory: two trajectories, unless one falls
    config = apply_preset(get_config(TASK), "tiny").replace(num_steps_per_eval=250, num_exp_traj_eval=1,
                                                            num_seeds=2)
    return untrained_run(str(tmp_path_factory.mktemp("render") / "run"), config)


def _system(page):
    """The model and frames a brax viewer page carries (base64 of zlib-compressed JSON)."""
    b64 = re.search(r'var system = "([^"]+)"', page).group(1)
    return json.loads(zlib.decompress(base64.b64decode(b64)))


def test_html_page_carries_the_model_and_every_frame():
    import envs

    env = envs.make(TASK)
    qpos = np.tile(env.mj_model.qpos0, (7, 1))
    qpos[:, 0] = np.linspace(0.0, 0.6, 7)  # slide along x
    page = render.html_page(env, qpos, "<b>caption</b>")
    system = _system(page)
    names = [env.mj_model.body(i).name for i in range(1, env.mj_model.nbody)]
    assert system["link_names"] == names and system["opt"]["timestep"] == pytest.approx(env.dt)
    frames = system["states"]["x"]
    assert len(frames) == 7
    pos = np.array([f["pos"] for f in frames])  # (frames, bodies, 3)
    np.testing.assert_allclose(pos[:, :, 0] - pos[0, :, 0], np.tile(qpos[:, :1], (1, len(names))), atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(np.array([f["rot"] for f in frames]), axis=2), 1.0, atol=1e-9)
    assert '<div id="pearl-caption"' in page and "<b>caption</b>" in page


def test_render_writes_one_adaptation_run_as_html(hopper, tmp_path, capsys):
    out = tmp_path / "rollout.html"
    assert render.main([hopper, "--task-id", "3", "--seed", "1", "--out", str(out)]) == 0
    page = out.read_text()
    said = capsys.readouterr().out
    m = re.search(r"(\d+) trajectories, (\d+) frames", said)
    n_trajs, n_frames = int(m.group(1)), int(m.group(2))
    frames = _system(page)["states"]["x"]
    assert len(frames) == n_frames >= 250 and n_trajs >= 2  # every step of the run, no more
    spans = re.findall(r"trajectory (\d+) \(z from the (prior|posterior)\): frames (\d+)-(\d+), ([\d.]+)-([\d.]+) s",
                       page)
    assert [(int(k), kind) for k, kind, *_ in spans] == [(1, "prior")] + [(k, "posterior")
                                                                         for k in range(2, n_trajs + 1)]
    firsts, lasts = [int(s[2]) for s in spans], [int(s[3]) for s in spans]
    assert firsts == [0] + [b + 1 for b in lasts[:-1]] and lasts[-1] == n_frames - 1  # back to back, all
    dt = _system(page)["opt"]["timestep"]
    assert float(spans[-1][5]) == pytest.approx(n_frames * dt, abs=0.006)
    # each trajectory starts from a reset: the torso back near the origin (reset noise 0.005)
    torso_x = np.array([f["pos"][0][0] for f in frames])
    assert np.all(np.abs(torso_x[firsts]) < 0.05)
    assert np.abs(torso_x).max() > 0 and len(np.unique(torso_x)) > n_trajs  # it moves between resets


def test_gif_needs_opengl_or_writes_every_frame(hopper, tmp_path):
    out = tmp_path / "rollout.gif"
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.run([sys.executable, "-m", "experiments.render", hopper, "--task-id", "0", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    if render.gl_problem() is None:  # a machine with OpenGL: the GIF itself
        from PIL import Image

        assert proc.returncode == 0, proc.stderr
        n = int(re.search(r"(\d+) frames", proc.stdout).group(1))
        assert Image.open(out).n_frames == n
    else:
        assert proc.returncode == 2 and not out.exists()
        assert proc.stderr.count("\n") == 1 and "MuJoCo's offscreen renderer needs OpenGL" in proc.stderr
        assert "MUJOCO_GL=" in proc.stderr and "write an .html instead" in proc.stderr


def test_gif_writer_keeps_every_frame_at_the_env_step(tmp_path):
    from PIL import Image

    frames = [np.full((4, 6, 3), 20 * i, np.uint8) for i in range(5)]
    path = str(tmp_path / "a.gif")
    assert render.write_gif(path, iter(frames), dt=0.05) == 5
    gif = Image.open(path)
    assert gif.n_frames == 5 and gif.info["duration"] == 50 and gif.size == (6, 4)


@pytest.mark.parametrize("args, message", [
    (["{missing}", "--task-id", "0"], "not a directory"),
    (["{run}", "--task-id", "0", "--out", "r.mp4"], "--out=r.mp4: unsupported format '.mp4'; use .html, .gif"),
    (["{run}", "--task-id", "0", "--seed", "5"], "--seed=5: not a seed of"),
    (["{run}", "--task-id", "10"], "--task-id=10: indexes the 10 test tasks of hopper-rand-params; allowed 0..9"),
    (["{run}"], "the following arguments are required: --task-id"),
    (["{run}", "--task-id", "0", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_errors_are_one_line_with_status_2(hopper, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    argv = [a.format(run=hopper, missing=str(tmp_path / "missing")) for a in args]
    assert render.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not os.listdir(tmp_path)
