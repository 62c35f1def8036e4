"""`esmpi bench` runs end to end and reports every figure the throughput issue asks for.

No timing is asserted here: speed is judged from `make bench` output on quiet cores."""

import json
import math

import pytest

from conftest import checked, esmpi
from esmpi import strategies

pytestmark = pytest.mark.slow


def test_bench_reports_every_part(tmp_path):
    report_path = tmp_path / "bench.json"
    result = checked(
        esmpi(
            "bench",
            "--envs",
            "CartPole-v1",
            "HalfCheetah-v5",
            "--train-seconds",
            "0.5",
            "--repeats",
            "2",
            "--popsize",
            "4",
            "--big-popsize",
            "8",
            "--loop-seconds",
            "0.3",
            "--max-steps",
            "100",
            "--json",
            str(report_path),
            cwd=tmp_path,
        )
    )
    report = json.loads(report_path.read_text())
    assert [row["shape"] for row in report["forward"]] == ["17->128->64->6", "348->256->256->17"]
    assert all(row["numba_us"] > 0 and row["numpy_us"] > 0 for row in report["forward"])
    families = report["policy_families"]
    assert [row["policy"] for row in families] == ["linear", "mlp", "rnn", "hebbian"]
    assert [row["shape"] for row in families] == ["17->6", *["17->128->64->6"] * 3]
    assert all(0 < row["share"] < 1 and row["step_us"] > 0 for row in families)
    assert "share of a step" in result.stdout + result.stderr
    for row in report["environments"]:
        assert row["efficiency"] == pytest.approx(
            row["train_steps_per_s_per_rank"] / row["bare_steps_per_s"]
        )
        assert row["limit_ratio"] == pytest.approx(
            row["train_steps_per_s_per_rank"] / row["limit_steps_per_s"]
        )
        # the physics loop: HalfCheetah steps natively, CartPole has no MuJoCo physics
        if row["env"] == "HalfCheetah-v5":
            assert row["physics_steps_per_s"] > 0
            assert row["physics_ratio"] == pytest.approx(
                row["train_steps_per_s_per_rank"] / row["physics_steps_per_s"]
            )
        else:
            assert math.isnan(row["physics_steps_per_s"]) and math.isnan(row["physics_ratio"])
        # Shares of wall time; the rollouts may overlap rank 0's checkpoint writing.
        split = row["train"]["split"]
        assert all(0 <= share <= 1 for share in split.values()) and sum(split.values()) > 0.95
        assert split["rollouts"] + split["update"] + split["other"] < 1.05
        # the row is the round of median efficiency (the lower middle of two)
        assert row["efficiency"] == min(row["efficiency_of_each_round"])
        assert 0 < row["policy_share"] < 1
    assert report["strong_scaling"]["efficiency"] > 0
    assert len(report["strong_scaling"]["efficiency_of_each_pair"]) == 2
    assert [row["ranks"] for row in report["scaling_model"]["rows"]][-1] == 1024
    assert [row["strategy"] for row in report["strategies"]] == list(strategies.REGISTRY)
    assert all(0 < row["update_share"] < 1 for row in report["strategies"])
    assert "by strategy" in result.stdout
    memory = report["memory"]
    assert [row["ranks"] for row in memory] == [1, 2, 4]
    # The table is held once per node: proportional memory per rank falls as ranks share it.
    assert (
        memory[2]["pss_mib_per_rank"][0]
        < memory[0]["pss_mib_per_rank"][0] - memory[0]["table_mib"] / 2
    )
    assert "efficiency" in result.stdout and "limit_ratio" in result.stdout
    assert "physics_ratio" in result.stdout
