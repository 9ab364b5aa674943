"""Placement over devices, in a child process with 8 simulated CPU devices (tests/device_checks.py).

Bounds: parameters of the same seed on different layouts agree to float32 reduction order
(measured ~1e-7 after two iterations); keys, padding and refitting are exact.
"""
import json
import subprocess

import pytest

from tests.tiny import python, subprocess_env


@pytest.mark.slow
def test_seed_and_task_placement_on_8_devices(tmp_path):
    env = subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=8")
    proc = subprocess.run([python(), "-m", "tests.device_checks", str(tmp_path / "ckpt")], env=env,
                          capture_output=True, text=True, timeout=900)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    r = json.loads(lines[-1][len("REPORT "):])
    assert r["devices"] == 8
    # 8 seeds over 8 devices: each device holds one seed; the same run as on one device
    assert r["spread_shards"] == 8
    assert r["spread_vs_one_keys_equal"]
    assert r["spread_vs_one_params"] < 5e-6 and r["spread_vs_one_eval"] < 1e-3
    # 3 seeds on 8 devices: padded with phantom copies of the first seed, real seeds unchanged
    assert r["padded_slots"] == 8
    assert r["padded_vs_first3_params"] < 5e-6
    assert r["phantom_is_first_seed_params"] < 5e-6
    # a checkpoint written with 8 slots resumes on one device as 3 slots, exactly, and trains on
    assert r["refit_slots"] == 3 and r["refit_vs_saved"] == 0.0 and r["refit_trains_iteration"] == 3
    # the meta-batch split over 4 devices: gradients are combined across them, same update
    assert r["split_has_all_reduce"]
    assert r["split_vs_whole_params"] < 5e-6
