"""Benchmark one flywheel iteration end to end through the real entry point (the ``cycle`` Prefect flow).

Runs ``iterations`` cycles (default 1) in a fresh workspace on the embedded defaults (Prefect ephemeral API, local
Ray, MLflow on SQLite) and reports wall time, each stage's share of it, and the iteration's learning figures as
measured (held-out success direct and with planning, value-head AUC and world-model MSE, base vs refined). Nothing
is compared side by side here: this is the cost and outcome of the product's main job on this machine.

Usage: ``python benchmarks/bench_cycle.py [--quick] [--iterations N] [--home DIR] [--set k=v ...]``
(``--quick`` = the ``smoke`` profile, else ``cpu``); the last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STAGES = ("demos", "finetune", "rollouts", "refine", "evaluate", "promote")


def _num(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke profile (minutes) instead of cpu")
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--home", type=Path, default=None, help="workspace (default: a new temporary folder)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    profile = "smoke" if args.quick else "cpu"
    home = args.home or Path(tempfile.mkdtemp(prefix="bench-cycle-"))

    from flywheel.cli.common import setup

    cfg, ws = setup(profile, None, args.overrides, home)  # before Prefect is imported
    from flows.cycle import cycle_flow

    results = []
    for _ in range(args.iterations):
        t0 = time.perf_counter()
        summary = cycle_flow(profile=profile, overrides=args.overrides, home=str(ws.home))
        wall = time.perf_counter() - t0
        m = summary["metrics"]
        stage_s = {s: m.get(f"duration/{s}_s", 0.0) for s in STAGES}
        staged = sum(stage_s.values())
        resumed = staged > wall  # stages finished by an earlier (crashed) run count in their durations, not in wall
        row = {
            "iteration": summary["iteration"], "total_s": round(wall, 1), "stage_total_s": round(staged, 1),
            "resumed": resumed,
            "stage_share": {s: round(v / max(staged, 1e-9), 3) for s, v in stage_s.items()},
            # Prefect, imports, report: only measurable when this process ran every stage
            "overhead_share": None if resumed else round(1 - staged / wall, 3),
            "success_direct_base": _num(m.get("eval/success_rate_base")),
            "success_planning_base": _num(m.get("eval/success_rate_planning_base")),
            "success_direct": _num(m.get("eval/success_rate")),
            "success_planning": _num(m.get("eval/success_rate_planning")),
            "value_auc_base": _num(m.get("value/auc_base")), "value_auc_refined": _num(m.get("value/auc")),
            "wm_mse_base": _num(m.get("wm/mse_base")), "wm_mse_refined": _num(m.get("wm/mse")),
            "heldout_episodes": summary["heldout_episodes"], "decision": summary["decision"],
        }
        results.append(row)
        print(f"iteration {row['iteration']}: {wall:.0f}s; " + ", ".join(f"{s} {stage_s[s]:.0f}s" for s in STAGES))
    last = results[-1]
    print(json.dumps({"profile": profile, "home": str(ws.home), **last,
                      "per_iteration": results if len(results) > 1 else None}))


if __name__ == "__main__":
    main()
