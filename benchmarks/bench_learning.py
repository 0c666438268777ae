"""The science's scoreboard: does one Cosmos Policy trained on this CPU solve LIBERO-Object from held-out start
positions, does its value head tell success from failure, and does planning beat direct sampling?

One run, through the product's real entry point (the ``cycle`` Prefect flow, embedded defaults, a fresh workspace):

1. demos: the scripted expert on the tasks (``--quick``: tasks 0-1, 20 each; else all ten, 40 each) from the
   *train* init states;
2. fine-tune one language-conditioned model (``base`` mix) for ``--train-minutes`` of CPU time (default 30,
   ``--quick`` 10): ``train.minutes``, the training loop measures its own rate and sets the step count (the lr
   schedule's horizon) to fill the budget, counted from the start of Ray Train (start-up included; the steps and
   minutes used are reported). The
   steps/s of ``train_step`` on synthetic batches is measured first, for the record. ``--steps N`` trains a fixed
   step count instead;
3. rollouts with both outcomes (the model + the noisy expert) on train init states, then the 90/10 refinement
   (a quarter of the budget, or of the steps);
4. held-out evaluation, on the same held-out init states and seeds: the base model direct and planning with
   itself; after refinement, planning = the base policy judged by the refined planning model (the reference's
   pairing, ``cycle.planner=separate``; ``same``: the refined model alone) and direct = the deployed policy, i.e.
   the base's own with a separate planner (the same episodes as ``success_direct``; ``--set
   cycle.refined_policy_diagnostic=true`` evaluates the refined model's own sampling instead)
   (``eval.episodes_per_task``: 20 with ``--quick``, else 10), plus value-head ROC AUC and
   world-model error on held-out rollouts and the sampled-chunk action L1 on held-out clean demos.

Every setting is a function of the arguments, so a crashed run resumes from its finished stages when run again
with the same arguments and ``--home``.

Other planning settings (e.g. more candidates) are measured afterwards on the same held-out episodes, paired, by
``benchmarks/bench_planning_settings.py --home DIR``.

Success rates come with Wilson 95% intervals from the lake's ``evaluations`` table. The settings used are printed
and returned; ``--set k=v`` overrides any of them (levers for ablations). The last stdout line is a JSON object.

Usage: ``python benchmarks/bench_learning.py [--quick] [--train-minutes M] [--steps N] [--home DIR] [--set k=v ...]``
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

BATCH = 16
THREADS = 2


STEP_CAP = 1_000_000  # train.steps under a time budget: an upper bound never reached on a CPU


def settings(quick: bool, minutes: float, steps: int | None) -> list[str]:
    """The learning run's config on top of the ``cpu`` profile (later ``--set`` items win): a time budget
    (``train.minutes``), or ``steps`` when given."""
    tasks = [0, 1] if quick else list(range(10))
    if steps is None:
        budget = [f"train.minutes={minutes:g}", f"train.steps={STEP_CAP}", f"refine.minutes={minutes / 4:g}",
                  f"refine.steps={STEP_CAP}", "train.checkpoint_every=2500"]
    else:
        budget = [f"train.steps={steps}", f"refine.steps={max(50, steps // 4)}", "train.minutes=null",
                  "refine.minutes=null",
                  f"train.checkpoint_every={max(100, steps // 4)}"]
    return [
        # 40 demos per task: 65/100 held-out vs 51/100 with 20 at a similar training budget (docs/learning.md).
        f"sim.tasks={tasks}", f"demos.per_task={20 if quick else 40}", "demos.image_every=4", *budget,
        f"train.batch_size={BATCH}", f"train.cpus_per_worker={THREADS}", "train.report_every=50",
        "rollout.episodes_per_task=8" if quick else "rollout.episodes_per_task=4", "rollout.num_workers=2",
        f"eval.episodes_per_task={20 if quick else 10}",
        # Best-of-N on a CPU: 4 candidates, 1 world-model and 2 value samples each (the paper's 8/3/5 costs ~10x).
        "eval.num_candidates=4", "eval.world_model_samples=1", "eval.value_samples=2",
        f"cycle.heldout_expert_episodes_per_task={4 if quick else 2}", "cycle.heldout_demos_per_task=2",
    ]


def calibrate_steps_per_s(seconds: float = 10.0) -> float:
    """Steps/s of the real ``train_step`` (tiny preset, LIBERO layout, batch 16, 2 threads) on synthetic batches."""
    import numpy as np
    import torch

    from cosmos_policy.configuration_cosmos_policy import get_config
    from cosmos_policy.latent_layout import libero_layout
    from cosmos_policy.modeling_cosmos_policy import CosmosPolicyModel
    from cosmos_policy.samples import TrainingBatch
    from cosmos_policy.train_step import make_optimizer, train_step

    torch.set_num_threads(THREADS)
    cfg = get_config("tiny", libero_layout())
    model = CosmosPolicyModel(cfg)
    opt = make_optimizer(model, cfg.train)
    lay = cfg.layout
    g = torch.Generator().manual_seed(0)
    batch = TrainingBatch(
        latents=torch.randn(BATCH, lay.latent_channels, lay.num_frames, lay.latent_height, lay.latent_width),
        cond_mask=torch.zeros(BATCH, lay.num_frames, dtype=torch.bool),
        sample_type=torch.from_numpy(np.repeat([0, 1, 2, 0], BATCH // 4)).long(),
        actions=torch.rand(BATCH, lay.chunk_size, lay.action_dim) * 2 - 1, values=torch.rand(BATCH) * 2 - 1,
        instructions=[f"task {i % 2}" for i in range(BATCH)])
    for _ in range(3):
        train_step(model, opt, batch, g)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        train_step(model, opt, batch, g)
        n += 1
    return n / (time.perf_counter() - t0)


def _num(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)


def success_table(lake, iteration: int, labels: dict[str, dict[str, str]], inference: dict[str, str]
                  ) -> dict[str, dict]:
    """Per (role, mode): successes, episodes, rate and Wilson 95% interval, overall and per task. ``labels``:
    role → mode → the ``policy_version`` its episodes recorded (the cycle summary's ``systems``); ``inference``:
    mode → the cycle's inference settings (evaluations under other settings, e.g. bench_planning_settings.py's,
    are left out)."""
    from storage_schemas.stats import wilson_interval
    from storage_schemas.views import connect

    con = connect(lake)
    rows = con.execute("SELECT policy_version, planning, task_id, n_success, n_episodes FROM evaluations "
                       "WHERE iteration = ? AND (inference IS NULL OR inference = CASE WHEN planning THEN ? ELSE ? END)",
                       [int(iteration), inference["planning"], inference["direct"]]).fetchall()
    con.close()
    out: dict[str, dict] = {}
    for role, modes in labels.items():
        for mode, label in modes.items():
            mine = [r for r in rows if r[0] == label and r[1] == (mode == "planning")]
            if not mine:
                continue
            k, n = sum(r[3] for r in mine), sum(r[4] for r in mine)
            lo, hi = wilson_interval(k, n)
            out[f"{role}_{mode}"] = {"successes": k, "episodes": n, "rate": round(k / n, 4) if n else None,
                                     "ci95": [round(lo, 3), round(hi, 3)],
                                     "per_task": {int(r[2]): [int(r[3]), int(r[4])] for r in sorted(mine, key=lambda r: r[2])}}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tasks 0-1, 10 training minutes, 20 episodes per task")
    parser.add_argument("--train-minutes", type=float, default=None, help="CPU budget of the fine-tuning")
    parser.add_argument("--home", type=Path, default=None, help="workspace (default: a new temporary folder)")
    parser.add_argument("--steps", type=int, default=None,
                        help="a fixed number of training steps (refinement: a quarter) instead of the time budget")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    minutes = args.train_minutes or (10.0 if args.quick else 30.0)
    t_start = time.perf_counter()
    rate = calibrate_steps_per_s()
    overrides = settings(args.quick, minutes, args.steps) + args.overrides
    print(f"train_step: {rate:.2f} steps/s on synthetic batches (batch {BATCH}, {THREADS} threads); "
          + (f"{args.steps} steps" if args.steps else f"a {minutes:g}-minute training budget"))
    print("settings: cpu profile + " + " ".join(overrides), flush=True)
    home = args.home or Path(tempfile.mkdtemp(prefix="bench-learning-"))

    from flywheel.cli.common import setup

    cfg, ws = setup("cpu", None, overrides, home)  # before Prefect is imported
    from flows.cycle import cycle_flow

    summary = cycle_flow(profile="cpu", overrides=overrides, home=str(ws.home))
    m = summary["metrics"]

    systems = summary["systems"]
    from tasks.rollouts import inference_settings

    table = success_table(ws.lake, summary["iteration"], {"base": systems["base"], "refined": systems["candidate"]},
                          {"direct": inference_settings(cfg, False), "planning": inference_settings(cfg, True)})
    rate_of = lambda key: table.get(key, {}).get("rate")  # noqa: E731
    result = {
        "tasks": len(cfg.sim.tasks or []), "train_steps": summary["train_steps"]["base"],
        "refine_steps": summary["train_steps"]["candidate"], "planner": cfg.cycle.planner,
        "train_minutes": _num(m.get("duration/finetune_s", float("nan")) / 60),
        "calibrated_steps_per_s": round(rate, 2),
        "success_direct": rate_of("base_direct"), "success_planning": rate_of("base_planning"),
        "success_direct_refined": rate_of("refined_direct"), "success_planning_refined": rate_of("refined_planning"),
        "value_auc_base": _num(m.get("value/auc_base")), "value_auc_refined": _num(m.get("value/auc")),
        "wm_mse_base": _num(m.get("wm/mse_failures_base")), "wm_mse_refined": _num(m.get("wm/mse_failures")),
        "action_l1_base": _num(m.get("policy/action_l1_base")), "action_l1_refined": _num(m.get("policy/action_l1")),
        "eval_episodes": sum(v["episodes"] for v in table.values()),
        "heldout_offline_episodes": summary["heldout_episodes"],
        "success": table, "stage_s": {k.removeprefix("duration/").removesuffix("_s"): round(v, 1)
                                      for k, v in m.items() if k.startswith("duration/")},
        "total_minutes": round((time.perf_counter() - t_start) / 60, 1), "home": str(ws.home),
        "overrides": overrides,
    }
    for key, v in table.items():
        print(f"{key:18s} {v['successes']:3d}/{v['episodes']:<3d} = {v['rate']:.2f}  95% CI [{v['ci95'][0]:.2f}, "
              f"{v['ci95'][1]:.2f}]  per task {v['per_task']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
