"""Does the judge choose well among one state's candidates? An offline test of best-of-N planning.

Planning can only beat direct sampling if (1) the policy's candidates from one state lead to different outcomes and
(2) the judge's scores order them. Held-out episode ranking (value AUC) measures neither: it compares states, not
candidates of one state. After a ``bench_learning.py`` run this benchmark measures both, on the same held-out
episodes:

1. For one held-out episode per task (``--episodes-per-task``), the base policy acts directly with the evaluation's
   noise keys; at each branch query (``--branch-queries``) the state is a *branch state*.
2. At a branch state the base policy proposes N candidates (the evaluation's planning settings) and several judges
   score them: the deployed one (the refined model, W x V as evaluated), the same with other noise (a retest), with
   more samples, the base model, and the refined value head given the *observed* future (the real state after the
   candidate's whole chunk, instead of the world model's prediction: separates world-model error from value error).
3. Each candidate's outcome is measured by simulation: the environment is reset, the branch prefix replayed (MuJoCo
   is deterministic), the candidate executed (``model.execute_actions`` actions), and the base policy continues
   directly to the end of the episode, ``--continuations`` times with different noise (the same noise for every
   candidate of a state: common random numbers make the candidates' comparison sharper).

Per judge: ``choice`` (success rate of the candidate it picks), ``random`` (mean over candidates: what direct
sampling gets from the state), ``oracle`` (the best candidate), and the within-state pairwise concordance (pairs of
one state's candidates with different measured success: how often the judge scores the better one higher; 0.5 is
chance). The last stdout line is a JSON object; per-state details go to ``HOME/bench_judge.json``.

Usage: ``python benchmarks/bench_judge.py --home DIR [--quick] [--set k=v ...]`` (``--quick``, ``--train-minutes``
and ``--set`` as given to ``bench_learning.py``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_planning_settings import finished_cycle, outcomes, run_overrides, run_parser  # noqa: E402

Key = tuple[int, int, int]  # (task, init state, seed)


# ----------------------------------------------------------------------------- metrics (pure)
def judge_metrics(success: np.ndarray, scores: np.ndarray) -> dict:
    """How well ``scores`` (S states x N candidates) choose among each state's candidates, whose measured success
    rates are ``success`` (S x N): choice / random / oracle success, pairwise concordance within states."""
    success, scores = np.asarray(success, float), np.asarray(scores, float)
    if success.shape != scores.shape or success.ndim != 2:
        raise ValueError(f"success {success.shape} and scores {scores.shape} must both be (states, candidates)")
    rows = np.arange(len(success))
    pairs = concordant = 0.0
    for p, s in zip(success, scores, strict=True):
        for i in range(len(p)):
            for j in range(i + 1, len(p)):
                if p[i] == p[j]:
                    continue
                pairs += 1
                d = (s[i] - s[j]) * (p[i] - p[j])
                concordant += 1.0 if d > 0 else 0.5 if d == 0 else 0.0
    return {"choice": round(float(success[rows, scores.argmax(1)].mean()), 4),
            "random": round(float(success.mean()), 4), "oracle": round(float(success.max(1).mean()), 4),
            "pairs": int(pairs), "concordance": round(concordant / pairs, 4) if pairs else None,
            "score_spread": round(float(scores.std(1).mean()), 4)}


def retest(a: np.ndarray, b: np.ndarray) -> dict:
    """Agreement of two scorings of the same candidates: same pick, and the correlation of within-state deviations."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    da, db = (a - a.mean(1, keepdims=True)).ravel(), (b - b.mean(1, keepdims=True)).ravel()
    denom = float(np.sqrt((da ** 2).sum() * (db ** 2).sum()))
    return {"same_pick": round(float((a.argmax(1) == b.argmax(1)).mean()), 4),
            "within_state_corr": round(float((da * db).sum() / denom), 4) if denom else None}


# ----------------------------------------------------------------------------- simulation
@dataclass
class Branch:
    """A branch state: the episode, the query index and the actions that lead there."""

    key: Key
    query: int
    instruction: str
    prefix: np.ndarray  # (T, A) actions executed from reset
    candidates: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (N, K, A) environment units
    scores: dict[str, list[float]] = field(default_factory=dict)
    success: list[list[bool]] = field(default_factory=list)  # [candidate][continuation]


def _observe(env, result):
    from sims.types import Observation

    obs = result if isinstance(result, Observation) else result.observation
    return Observation(env.render(), obs.proprio, obs.object_state)


def _execute(env, actions: np.ndarray):
    """Run actions until the episode ends; (last StepResult or None, done, success)."""
    res = None
    for a in actions:
        res = env.step(a, render=False)
        if res.done:
            return res, True, bool(res.success)
    return res, False, False


def replay(env, key: Key, prefix: np.ndarray):
    """Reset to the episode's start and run ``prefix`` again; the last observation (no images)."""
    obs = env.reset(*key)
    res, done, _ = _execute(env, prefix)
    if done:
        raise RuntimeError(f"episode {key} ended inside its branch prefix ({len(prefix)} steps)")
    return obs if res is None else res


def branch_states(env, policy, keys: Sequence[Key], queries: Sequence[int], k: int, noise_key) -> list[Branch]:
    """Run the policy directly from each episode's start with its evaluation noise keys; a Branch at each query."""
    out = []
    for key in keys:
        instruction = env.task_spec(key[0]).instruction
        last, actions = env.reset(*key), []
        for q in range(max(queries) + 1):
            obs = _observe(env, last)
            if q in queries:
                out.append(Branch(key, q, instruction, np.asarray(actions, np.float32).reshape(-1, env.action_dim)))
            chunk = policy.act([obs], [instruction], keys=[noise_key(key, q)])[0][:k]
            last, done, _ = _execute(env, chunk)
            actions.extend(chunk)
            if done:
                break
    return out


def continue_after(env, policy, branch: Branch, chunk: np.ndarray, k: int, seed: int) -> bool:
    """Success of: the branch prefix, ``chunk[:k]``, then the policy directly until the episode ends."""
    from cosmos_policy.planner import row_seed

    replay(env, branch.key, branch.prefix)
    res, done, ok = _execute(env, chunk[:k])
    q = branch.query + 1
    while not done:
        obs = _observe(env, res)
        res, done, ok = _execute(env, policy.act([obs], [branch.instruction], keys=[row_seed(seed, q)])[0][:k])
        q += 1
    return ok


def observed_future(env, branch: Branch, chunk: np.ndarray):
    """The observation after the candidate's whole chunk (the future the world model predicts)."""
    replay(env, branch.key, branch.prefix)
    res, _, _ = _execute(env, chunk)
    return _observe(env, res)


def judge_branch(policy, judges: dict, branch: Branch, env, seed: int, value_samples: int) -> None:
    """Candidates of the base policy at ``branch`` (``policy.planner`` settings), scored by each judge
    (name -> (model, planner config, seed offset)) and by the refined value of the observed futures."""
    from cosmos_policy.planner import majority_mean, plan, score_candidates, value_of_futures, with_actions

    obs = _observe(env, replay(env, branch.key, branch.prefix))
    current = policy.current_latents([obs])
    text = policy.model.encode_text([branch.instruction])
    first, (deployed_judge, deployed, _) = next(iter(judges.items()))
    out = plan(policy.model, current, text, deployed, seed=[seed], planning_model=deployed_judge)
    branch.candidates = policy.stats.action.unnormalize(out.candidates[0].numpy())
    branch.scores[first] = out.scores[0].tolist()
    for name, (model, cfg, offset) in list(judges.items())[1:]:
        _, scores = score_candidates(model, current, text, out.candidates, cfg, seed=[seed + offset])
        branch.scores[name] = scores[0].tolist()
    futures = [observed_future(env, branch, c) for c in branch.candidates]
    n = len(futures)
    filled = with_actions(policy.layout, policy.observed_latents([obs] * n, futures), out.candidates[0])
    values = value_of_futures(deployed_judge, filled, text.repeat(n, 1, 1), value_samples,
                              [seed + j for j in range(n)], deployed.value_steps, deployed.max_batch_size)
    branch.scores["observed future"] = majority_mean(values, deployed.success_threshold,
                                                     deployed.minority_score).tolist()


def main(argv: Sequence[str] | None = None) -> dict:
    parser = run_parser(__doc__.splitlines()[0])
    parser.add_argument("--episodes-per-task", type=int, default=1, help="held-out episodes branched per task")
    parser.add_argument("--branch-queries", default="2,6", help="query indices to branch at, comma separated")
    parser.add_argument("--continuations", type=int, default=2, help="simulated continuations per candidate")
    args = parser.parse_args(argv)
    overrides = run_overrides(parser, args)
    queries = sorted({int(q) for q in args.branch_queries.split(",")})

    from flywheel.cli.common import setup

    cfg, ws = setup("cpu", None, overrides, args.home)
    import torch
    from tqdm import tqdm

    from cosmos_policy.planner import row_seed
    from flywheel.model_setup import component_paths
    from flywheel.recordings import EpisodeRequest
    from sims.factory import make_env
    from tasks.batched_rollouts import query_key
    from tasks.registry import check_components
    from tasks.rollouts import inference_settings, load_cosmos_policy, resolve_checkpoint

    iteration, base_uri, refined_uri = finished_cycle(cfg, ws)
    base, refined = resolve_checkpoint(base_uri, cfg, ws), resolve_checkpoint(refined_uri, cfg, ws)
    components = check_components(base.path, **component_paths(cfg))
    policy = load_cosmos_policy(str(base.path), False, cfg.eval.num_candidates, cfg.eval.world_model_samples,
                                cfg.eval.value_samples, cfg.seed + iteration, sampler_steps=cfg.eval.sampler_steps,
                                planning_checkpoint=str(refined.path), **components)
    torch.set_num_threads(2)
    deployed = replace(policy.planner, num_candidates=cfg.eval.num_candidates,
                       num_world_samples=cfg.eval.world_model_samples, num_value_samples=cfg.eval.value_samples,
                       world_model_steps=cfg.eval.world_model_steps, value_steps=cfg.eval.value_steps)
    w, v = deployed.num_world_samples, deployed.num_value_samples
    judges = {f"refined W{w}V{v}": (policy.planning_model, deployed, 0),
              f"refined W{w}V{v} (other noise)": (policy.planning_model, deployed, 7919),
              "refined W4V4": (policy.planning_model, replace(deployed, num_world_samples=4, num_value_samples=4), 0),
              f"base W{w}V{v}": (policy.model, deployed, 0)}
    k = cfg.model.execute_actions or cfg.model.chunk_size
    direct = outcomes(ws.lake, iteration, base.version_label, False, inference_settings(cfg, False),
                      inference_settings(cfg, False))
    keys: list[Key] = []
    for task in sorted({t for t, _, _ in direct} & set(cfg.sim.tasks or range(99))):
        keys += sorted(key for key in direct if key[0] == task)[:args.episodes_per_task]
    suite = cfg.sim.suites[0]
    extra = {"object_state": cfg.sim.object_state} if suite.startswith("libero") else {}
    env = make_env(suite, cfg.sim.image_size, antialias=cfg.sim.antialias, mesh_resolution=cfg.sim.mesh_resolution,
                   **extra)
    noise_key = lambda key, q: query_key(EpisodeRequest(suite, *key), q)  # noqa: E731 - the evaluation's keys
    t0 = time.perf_counter()
    branches = branch_states(env, policy, keys, queries, k, noise_key)
    print(f"iteration {iteration}: {len(branches)} branch states from {len(keys)} held-out episodes (queries "
          f"{queries}); policy {base_uri}, judge {refined_uri}", flush=True)
    for b in tqdm(branches, desc="judging", leave=False):
        judge_branch(policy, judges, b, env, row_seed(policy.seed, noise_key(b.key, b.query)), 4)
    total = len(branches) * deployed.num_candidates * args.continuations
    with tqdm(total=total, desc="continuations") as bar:
        for b in branches:
            for chunk in b.candidates:
                b.success.append([continue_after(env, policy, b, chunk, k, row_seed(*b.key, b.query, 1 + r))
                                  for r in range(args.continuations)])
                bar.update(args.continuations)
    env.close()
    success = np.array([[np.mean(s) for s in b.success] for b in branches])
    result = {"iteration": iteration, "policy": base_uri, "judge": refined_uri, "states": len(branches),
              "candidates": deployed.num_candidates, "continuations": args.continuations, "execute_actions": k,
              "branch_queries": queries, "mixed_states": int((success.max(1) > success.min(1)).sum()),
              "judges": {name: judge_metrics(success, np.array([b.scores[name] for b in branches]))
                         for name in branches[0].scores},
              "retest": retest(*(np.array([b.scores[n] for b in branches]) for n in list(judges)[:2])),
              "minutes": round((time.perf_counter() - t0) / 60, 1)}
    for name, m in result["judges"].items():
        print(f"{name:30s} choice {m['choice']:.3f}  random {m['random']:.3f}  oracle {m['oracle']:.3f}  "
              f"concordance {m['concordance']} over {m['pairs']} pairs  spread {m['score_spread']}")
    details = [{"key": b.key, "query": b.query, "success": b.success, "scores": b.scores} for b in branches]
    (ws.home / "bench_judge.json").write_text(json.dumps({**result, "branches": details}, indent=1))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
