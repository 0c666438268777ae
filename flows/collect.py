"""Experience collection flow: scripted-expert demos -> lake -> behaviour-policy rollouts -> latent cache ->
DuckDB report.

The flywheel's data half, runnable today on the embedded defaults (Prefect ephemeral API, local Ray,
local lake). Each task is idempotent by episode id, so re-running the flow after a crash resumes it.
"""

from __future__ import annotations

from prefect import flow

from storage_schemas import Source
from tasks.latents import latents_task
from tasks.reports import report_task
from tasks.rollouts import demos_task, rollout_task
from tasks.runtime import load_workspace


@flow(name="collect", log_prints=True)
def collect_flow(profile: str = "cpu", config_path: str | None = None, overrides: list[str] | None = None,
                 iteration: int = 0, home: str | None = None) -> dict:
    cfg, ws = load_workspace(profile, config_path, overrides, home)
    summaries, latents = [], []
    for suite in cfg.sim.suites:
        summaries.append(demos_task(cfg, ws, suite, cfg.demos.per_task, cfg.sim.tasks))
        noisy = round(cfg.rollout.episodes_per_task * cfg.rollout.expert_noise_share)
        for policy, n in (("noisy_expert", noisy), ("random", cfg.rollout.episodes_per_task - noisy)):
            if n:
                summaries.append(rollout_task(cfg, ws, suite, policy, n, cfg.sim.tasks, iteration, Source.ROLLOUT))
        latents.append(latents_task(cfg, ws, suite))
    return {"summaries": summaries, "latents": latents, "report": report_task(ws)}
