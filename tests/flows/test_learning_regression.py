"""Learning regression (slow, sim): a Cosmos Policy trained on this CPU succeeds from held-out start positions.

Through the real CLI, in a fresh workspace:

1. ``flywheel demos generate``: the scripted expert on libero_object task 1 from the *train* init states, perturbed
   as the ``cpu`` profile records them (``demos.action_noise``; cached under pytest's cache,
   ``.pytest_cache/d/learning-demos-task1-v4``: a local re-run reuses them, a fresh clone makes them in ~1 minute);
2. ``flywheel train`` (Ray Train, the ``cpu`` profile's recipe with the policy-heavy base mix);
3. ``flywheel rollout --heldout``: direct sampling from the held-out init states 40-49, two seeds each, stored as
   ``source=eval``.

An untrained or broken model succeeds in none of them; the floor and the figures it was set from are in
``FLOOR``'s comment.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.lake import lake_sql

ROOT = Path(__file__).resolve().parents[2]
STEPS = 6000  # 9-25 minutes of Ray Train on 2 cores (65-190 samples/s)
EPISODES = 20
# Measured with the cpu profile (perturbed-expert demos, 8 executed actions, 4 solver steps, no antialiasing):
# 11/20 held-out successes with the shipped meshes (2026-12-03, fifth session; twice, the test itself reproduced it),
# 4/20 with the coarser visual meshes the profile now renders (sixth session; physics, demo trajectories and every
# seed the same, only the images ~3 grey levels apart), 7/20 with the reference's loss normalisation, the default
# since the ninth session. One pair cannot tell whether the coarser images cost success or a trained model varies
# that much from run to run (docs/learning.md), so the floor sits below all three. An untrained model gets 0. At a
# true rate of 0.2 a healthy model fails FLOOR = 2 with probability 0.07, at 0.37 (the three runs pooled) with 0.001.
FLOOR = 2
OVERRIDES = ["sim.tasks=[1]", "demos.per_task=20", "demos.image_every=4", f"train.steps={STEPS}",
             "train.minutes=null", "train.batch_size=16", "train.cpus_per_worker=2", "train.fractions=[0.8,0.1,0.1]",
             f"train.checkpoint_every={STEPS}", "train.report_every=100", "rollout.num_workers=2"]


def _cli(home: Path, *args: str) -> str:
    sets = [x for o in OVERRIDES for x in ("--set", o)]
    out = subprocess.run([sys.executable, "-m", "flywheel.cli.app", *args, "--profile", "cpu", *sets,
                          "--home", str(home)], cwd=ROOT, capture_output=True, text=True, timeout=3000,
                         env={**os.environ, "FLYWHEEL_HOME": str(home)})
    assert out.returncode == 0, f"flywheel {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.mark.slow
@pytest.mark.sim
def test_a_trained_policy_succeeds_from_heldout_start_positions(request: pytest.FixtureRequest, tmp_path: Path):
    home = tmp_path / "home"
    cache = Path(request.config.cache.mkdir("learning-demos-task1-v4"))
    if (cache / "complete").exists():
        shutil.copytree(cache / "lake", home / "lake")
    else:
        _cli(home, "demos", "generate", "--suite", "libero_object", "--tasks", "1")
        shutil.rmtree(cache / "lake", ignore_errors=True)
        shutil.copytree(home / "lake", cache / "lake")
        (cache / "complete").touch()
    _cli(home, "train", "--suite", "libero_object")
    _cli(home, "rollout", "--policy", "models:/cosmos-policy@candidate", "--suite", "libero_object", "--tasks", "1",
         "--episodes", str(EPISODES), "--heldout")
    rows = lake_sql(home / "lake", "SELECT init_state_index, success FROM episodes WHERE source = 'eval' ORDER BY 1")
    print(json.dumps({"heldout_successes": sum(s for _, s in rows), "episodes": len(rows), "steps": STEPS}))
    assert [i for i, _ in rows] == sorted(list(range(40, 50)) * (EPISODES // 10))  # held-out positions, 2 seeds
    assert sum(s for _, s in rows) >= FLOOR, f"{sum(s for _, s in rows)}/{len(rows)} held-out successes < {FLOOR}"
