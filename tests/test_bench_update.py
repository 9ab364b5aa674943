"""The update benchmark runs end to end at small shapes and reports positive finite numbers."""
import json
import math

from experiments import bench_update

NUMERIC_KEYS = (
    "compile_s_single", "compile_s_scan", "ms_per_step_single_call", "ms_per_step_scan",
    "gflop_per_step", "achieved_gflops_per_s", "matmul_chain_gflops_per_s",
    "matmul_square_gflops_per_s", "achieved_over_matmul",
)


def test_quick_benchmark_reports_positive_finite_numbers(capsys):
    result = bench_update.main(["--quick", "--steps", "3", "--repeats", "1"])
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(result))  # one JSON object
    for key in NUMERIC_KEYS:
        assert math.isfinite(result[key]) and result[key] > 0, (key, result[key])
    assert result["ratio_basis"] == "matmul_chain_gflops_per_s"
