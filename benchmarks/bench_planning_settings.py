"""Planning settings in closed loop, paired: after a ``bench_learning.py`` run, evaluate the same held-out episodes
(same iteration, init states and seeds) with other planning settings, e.g. more candidates, and compare each with
the run's direct sampling and its own planning episode by episode.

The system evaluated is the one the cycle deploys: the base policy proposing, judged by the refined planning
model (``--judge refined``, the default) or by itself (``--judge base``). Each ``--variant`` is one or more
``key=value`` overrides separated by spaces (``"eval.num_candidates=8"``); its episodes are new lake episodes
(their ids and the ``inference`` column carry the settings), so the run's own episodes are untouched and a variant
evaluated twice is not run again.

Paired comparison: episodes match on (task, init state, seed); ``wins`` are pairs only the variant solved,
``losses`` pairs only the other solved, ``p`` the one-sided exact McNemar test (variant better). Rates come with
Wilson 95% intervals. The last stdout line is a JSON object.

Usage: ``python benchmarks/bench_planning_settings.py --home DIR [--quick] [--set k=v ...] --variant "k=v ..."``
(``--quick``, ``--train-minutes`` and ``--set`` as given to ``bench_learning.py``, so the configuration matches).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_learning import settings  # noqa: E402

Key = tuple[int, int, int]  # (task, init state, seed)


def outcomes(lake, iteration: int, label: str, planning: bool, inference: str, default_inference: str
             ) -> dict[Key, bool]:
    """Held-out episode outcomes of one system in one mode; episodes without ``inference`` (written before the
    column existed) count as ``default_inference``."""
    from storage_schemas.views import connect

    con = connect(lake)
    try:
        rows = con.execute(
            "SELECT task_id, init_state_index, seed, success FROM episodes WHERE source = 'eval' AND iteration = ? "
            "AND policy_version = ? AND planning = ? AND coalesce(inference, ?) = ?",
            [iteration, label, planning, default_inference, inference]).fetchall()
    finally:
        con.close()
    return {(int(t), int(i), int(s)): bool(ok) for t, i, s, ok in rows}


def paired(a: dict[Key, bool], b: dict[Key, bool]) -> dict:
    """A vs B on their shared episodes: wins (only A solved), losses (only B solved), one-sided McNemar p."""
    from storage_schemas.stats import mcnemar_exact

    shared = sorted(set(a) & set(b))
    wins = sum(a[k] and not b[k] for k in shared)
    losses = sum(b[k] and not a[k] for k in shared)
    return {"pairs": len(shared), "wins": wins, "losses": losses, "p": round(mcnemar_exact(wins, losses), 4)}


def summary(results: dict[Key, bool]) -> dict:
    from storage_schemas.stats import wilson_interval

    k, n = sum(results.values()), len(results)
    lo, hi = wilson_interval(k, n)
    per_task: dict[int, list[int]] = {}
    for (task, _, _), ok in sorted(results.items()):
        per_task.setdefault(task, [0, 0])
        per_task[task][0] += ok
        per_task[task][1] += 1
    return {"successes": k, "episodes": n, "rate": round(k / n, 4) if n else None,
            "ci95": [round(lo, 3), round(hi, 3)], "per_task": per_task}


def finished_cycle(cfg, ws) -> tuple[int, str, str]:
    """(iteration, base model URI, refined model URI) of the newest finished cycle in the workspace."""
    from tasks.iteration import cycle_runs
    from tasks.runtime import init_mlflow

    runs = [r for r in cycle_runs(cfg, ws, init_mlflow(cfg, ws)) if r.info.status == "FINISHED"]
    if not runs:
        raise SystemExit(f"no finished cycle in {ws.home}: run benchmarks/bench_learning.py --home {ws.home} first")
    tags = runs[0].data.tags
    return int(tags["flywheel.iteration"]), tags["flywheel.base_model"], tags["flywheel.candidate"]


def run_parser(description: str) -> argparse.ArgumentParser:
    """Arguments naming a finished ``bench_learning.py`` run: ``--home`` and its ``--quick`` / ``--train-minutes`` /
    ``--set`` (so the configuration matches); see :func:`run_overrides`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--home", type=Path, required=True, help="workspace of a finished bench_learning run")
    parser.add_argument("--quick", action="store_true", help="the run used --quick")
    parser.add_argument("--train-minutes", type=float, default=None, help="as given to bench_learning.py")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="as given to bench_learning.py")
    return parser


def run_overrides(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The run's configuration overrides (refuses a ``--home`` without a lake)."""
    if not (args.home / "lake").exists():
        parser.error(f"{args.home} holds no lake: pass the --home of a bench_learning.py run")
    return settings(args.quick, args.train_minutes or (10.0 if args.quick else 30.0), None) + args.overrides


def main(argv: Sequence[str] | None = None) -> dict:
    parser = run_parser(__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", required=True,
                        help='planning overrides, space separated, e.g. "eval.num_candidates=8"')
    parser.add_argument("--judge", choices=("refined", "base"), default="refined",
                        help="who judges the base policy's candidates")
    args = parser.parse_args(argv)
    overrides = run_overrides(parser, args)

    from flywheel.cli.common import setup

    cfg, ws = setup("cpu", None, overrides, args.home)
    from flywheel.config import load_config
    from tasks.evaluation import evaluate_model
    from tasks.rollouts import inference_settings, resolve_checkpoint, system_label

    iteration, base_uri, refined_uri = finished_cycle(cfg, ws)
    base = resolve_checkpoint(base_uri, cfg, ws)
    judge_uri = refined_uri if args.judge == "refined" else None
    judge = resolve_checkpoint(refined_uri, cfg, ws) if judge_uri else None
    label_direct, label_plan = base.version_label, system_label(base, judge)
    own = {False: inference_settings(cfg, False), True: inference_settings(cfg, True)}
    direct = outcomes(ws.lake, iteration, label_direct, False, own[False], own[False])
    planning = outcomes(ws.lake, iteration, label_plan, True, own[True], own[True])
    if not direct:
        raise SystemExit(f"iteration {iteration} has no direct evaluation episodes of {label_direct}")
    print(f"iteration {iteration}: policy {base_uri}, judge {judge_uri or 'itself'}; the run's direct "
          f"{sum(direct.values())}/{len(direct)}, planning ({own[True]}) {sum(planning.values())}/{len(planning)}")
    result: dict = {"iteration": iteration, "policy": base_uri, "judge": judge_uri, "direct": summary(direct),
                    "planning": {"inference": own[True], **summary(planning)}, "variants": []}
    for variant in args.variant:
        extra = variant.split()
        vcfg = load_config("cpu", None, overrides + extra)
        inference = inference_settings(vcfg, True)
        t0 = time.perf_counter()
        evaluate_model(vcfg, ws, base_uri, iteration=iteration, planning_model=judge_uri, modes=("planning",))
        seconds = time.perf_counter() - t0
        mine = outcomes(ws.lake, iteration, label_plan, True, inference, own[True])
        row = {"variant": extra, "inference": inference, **summary(mine), "eval_s": round(seconds, 1),
               "vs_direct": paired(mine, direct), "vs_planning": paired(mine, planning)}
        result["variants"].append(row)
        print(f"{inference:24s} {row['successes']:3d}/{row['episodes']:<3d} = {row['rate']:.2f} 95% CI "
              f"[{row['ci95'][0]:.2f}, {row['ci95'][1]:.2f}]  vs direct {row['vs_direct']}  vs {own[True]} "
              f"{row['vs_planning']}  ({seconds / 60:.1f} min)", flush=True)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
