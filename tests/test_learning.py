"""PEARL learns: a short point-robot run on the CPU preset closes most of the gap to an oracle.

The run trains for minutes, so it compiles at XLA's default optimization level in a child
process (the test session compiles unoptimized: see tests/conftest.py).
"""
import json
import subprocess

import jax
import jax.numpy as jnp
import pytest

from tests.tiny import REPO, optimized_env, python


def oracle_return(env, tasks, key, episodes: int = 8) -> float:
    """Mean return of a policy that knows the goal and heads straight for it at full speed."""
    n = jax.tree.leaves(tasks)[0].shape[0]

    def episode(k):
        state = jax.vmap(env.reset)(jax.random.split(k, n), tasks)

        def step(s, _):
            action = jnp.clip((s.task - s.obs) / 0.1, -1.0, 1.0)
            s = jax.vmap(env.step)(s, action)
            return s, s.reward

        _, rewards = jax.lax.scan(step, state, None, length=env.max_path_length)
        return rewards.sum(0)

    return float(jnp.mean(jax.vmap(episode)(jax.random.split(key, episodes))))


def learning_returns() -> dict:
    """Test and train returns before and after the cpu-small preset's run, with oracles."""
    from envs.base import task_at
    from experiments.configs import apply_preset, get_config
    from pearl_jax.train import Trainer, seed_slice

    config = apply_preset(get_config("point-robot"), "cpu-small")
    trainer = Trainer(config)
    state = trainer.init(trainer.seeds())  # a batch of one seed
    before = seed_slice(trainer.evaluate(state), 0)
    state, _ = trainer.run_chunk(state, config.num_iterations)
    after = seed_slice(trainer.evaluate(state), 0)
    online = "AverageReturn_all_test_tasks"  # the paper's metric: online adaptation on test tasks
    offline = "AverageTrainReturn_all_train_tasks"  # policy given an encoder-buffer context
    return {
        "untrained": float(before[online]), "trained": float(after[online]),
        "oracle": oracle_return(trainer.env, task_at(trainer.tasks, trainer.test_ids), jax.random.key(1)),
        "untrained_offline": float(before[offline]), "trained_offline": float(after[offline]),
        "oracle_offline": oracle_return(trainer.env, task_at(trainer.tasks, trainer.train_ids), jax.random.key(2)),
    }


@pytest.mark.slow
def test_point_robot_learns_on_the_cpu_preset():
    code = "import json; from tests.test_learning import learning_returns; print(json.dumps(learning_returns()))"
    proc = subprocess.run([python(), "-c", code], cwd=REPO, env=optimized_env(), capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    u, f, o = r["untrained"], r["trained"], r["oracle"]
    uo, fo, oo = r["untrained_offline"], r["trained_offline"], r["oracle_offline"]
    print(f"test: untrained {u:.2f} trained {f:.2f} oracle {o:.2f}; "
          f"off-policy context: untrained {uo:.2f} trained {fo:.2f} oracle {oo:.2f}")
    assert u < -15.0 and o > -8.0  # sanity of the yardsticks themselves
    # the paper's metric: a clear margin over the untrained policy, and a good part of the way to
    # the oracle (with one prior-z exploration path, the reduced preset's 40 iterations close
    # about 45-50% of that gap)
    assert f > u + 4.0
    assert f - u >= 0.35 * (o - u)
    # given an informative context the learned policy is close to the optimum
    assert fo - uo >= 0.7 * (oo - uo)
