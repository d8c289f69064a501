"""The stress and fault suite, small (SHORT): the same scenarios `make stress` runs at full size."""

import pytest
from stress_scenarios import MEMORY_GROWTH_LIMIT_MB, SCENARIOS, SHORT, memory_growth


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[scenario.__name__ for scenario in SCENARIOS])
def test_scenario_meets_its_targets(ros_master, tmp_path, scenario):
    rows = scenario(tmp_path, SHORT, ros_master)
    assert rows and all(row.met or row.speed for row in rows), "\n".join(map(str, rows))


def test_the_memory_check_fails_a_node_that_leaks_on_purpose(ros_master, tmp_path):
    """The same workload as test_scenario_meets_its_targets[memory], the node keeping 10 kB of every /predict."""
    before, after = memory_growth(tmp_path, SHORT, leaking=True)
    assert sum(after) - sum(before) > MEMORY_GROWTH_LIMIT_MB
