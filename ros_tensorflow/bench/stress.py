#!/usr/bin/env python3
"""`make stress`: every stress and fault scenario at full size, against a master and node of its own. Prints a
table (scenario, load or fault, figure, target, met) and writes it to bench_results/stress.json; exits 1 if a
target is missed. `make test` runs the same scenarios small (test_stress.py).

Arguments, if any, name the scenarios to run (`stress.py memory fuzz`); the table is then not written.
"""

import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import rospy
from ros_processes import Master
from stress_scenarios import FULL, SCENARIOS, Row

RESULTS = Path(__file__).resolve().parents[2] / "bench_results"


def main():
    RESULTS.mkdir(exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="stress_"))
    master = Master(work_dir / "ros_home")
    rospy.init_node("stress", disable_signals=True)
    rows = []
    try:
        chosen = [scenario for scenario in SCENARIOS if scenario.__name__ in sys.argv[1:]] or SCENARIOS
        for scenario in chosen:
            started = time.monotonic()
            scenario_dir = work_dir / scenario.__name__
            scenario_dir.mkdir()
            try:
                rows += scenario(scenario_dir, FULL, master)
            except Exception as error:  # noqa: BLE001 - a scenario that breaks is a missed target, and the rest run
                rows.append(Row(scenario.__name__, "", f"broke: {error!r}"[:300], "runs", False))
            print(f"  {scenario.__name__}: {time.monotonic() - started:.0f} s", flush=True)
    finally:
        rospy.signal_shutdown("done")
        master.stop()
    if chosen == SCENARIOS:
        (RESULTS / "stress.json").write_text(json.dumps([dataclasses.asdict(row) for row in rows], indent=2) + "\n")
    print("\n| scenario | load or fault | figure | target | met |\n| --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row.scenario} | {row.load} | {row.figure} | {row.target} | {'yes' if row.met else 'NO'} |")
    return 0 if all(row.met for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
