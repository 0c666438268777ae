"""``flywheel model init``, ``latents``, ``show`` and ``score``: starting checkpoints, the latent cache, what a model
is, and how well its value head and world model do on recorded episodes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flywheel.cli.common import ConfigOpt, HomeOpt, ProfileOpt, SetOpt, UserError, console, handle_errors, setup

model_app = typer.Typer(help="Cosmos Policy model: starting checkpoints, cached latents, model details.",
                        no_args_is_help=True)

SuiteOpt = Annotated[str, typer.Option(help="Suite whose layout and statistics to use, e.g. libero_object.")]


@model_app.command("init")
@handle_errors
def init(
    suite: SuiteOpt = "libero_object",
    out: Annotated[Path | None, typer.Option(help="Checkpoint folder (default: <home>/checkpoints/init-<suite>).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random initialisation (no weights_path).")] = 0,
    profile: ProfileOpt = "cpu", config: ConfigOpt = None, set_: SetOpt = None, home: HomeOpt = None,
) -> None:
    """Write the checkpoint fine-tuning starts from: model.weights_path (+ vae_path, t5_path) when set, else the
    randomly initialised model.preset, with the suite's demonstration statistics."""
    from flywheel.model_setup import init_checkpoint

    cfg, ws = setup(profile, config, set_, home)
    folder = init_checkpoint(cfg, ws.lake, suite, out or ws.checkpoints / f"init-{suite}", seed)
    console.print(f"checkpoint written to {folder}")


@model_app.command("latents")
@handle_errors
def latents(
    suite: SuiteOpt = "libero_object",
    where: Annotated[str, typer.Option(help="Extra SQL predicate over the episodes view.")] = "true",
    limit: Annotated[int | None, typer.Option(help="At most this many episodes.")] = None,
    profile: ProfileOpt = "cpu", config: ConfigOpt = None, set_: SetOpt = None, home: HomeOpt = None,
) -> None:
    """Encode every episode's images of a suite once with the model's tokenizer (cached; re-runs only read)."""
    from flywheel.model_setup import cache_suite_latents

    if limit is not None and limit < 1:
        raise UserError("--limit must be >= 1")
    cfg, ws = setup(profile, config, set_, home)
    result = cache_suite_latents(cfg, ws.lake, ws.latent_cache, suite, where, limit)
    console.print(f"{len(result.episode_ids)} episodes of {suite}: {result.misses} encoded, {result.hits} already "
                  f"cached ({result.fingerprint}) under {ws.latent_cache}")


@model_app.command("show")
@handle_errors
def show(
    model: Annotated[str, typer.Argument(help="Checkpoint folder, models:/NAME@ALIAS or models:/NAME/VERSION.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    profile: ProfileOpt = "cpu", config: ConfigOpt = None, set_: SetOpt = None, home: HomeOpt = None,
) -> None:
    """What a model is: its version label (as rollouts record it), layout, size, training recipe and where this
    machine finds the tokenizer and text encoder it was trained with (by fingerprint)."""
    import json

    from tasks.rollouts import resolve_checkpoint

    cfg, ws = setup(profile, config, set_, home)
    info = _describe(cfg, resolve_checkpoint(model, cfg, ws))
    if as_json:
        print(json.dumps(info, default=str))
        return
    for key, value in info.items():
        if isinstance(value, dict):
            console.print(f"[bold]{key}[/bold]")
            for k, v in value.items():
                console.print(f"  {k}: {v}", highlight=False, soft_wrap=True)
        else:
            console.print(f"[bold]{key}[/bold]: {value}", highlight=False, soft_wrap=True)


@model_app.command("score")
@handle_errors
def score(
    models: Annotated[list[str], typer.Argument(help="Checkpoint folders or models:/ URIs, scored on the same "
                                                     "episodes.")],
    where: Annotated[str, typer.Option(help="SQL predicate over the episodes view choosing the episodes "
                                            "(default: every held-out one).")] = "source = 'eval'",
    seed: Annotated[int, typer.Option(help="Seed of the sampling chains.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    profile: ProfileOpt = "cpu", config: ConfigOpt = None, set_: SetOpt = None, home: HomeOpt = None,
) -> None:
    """Offline scores on recorded episodes: value-head ROC AUC (predicted value of the real next state vs the
    episode's success), world-model future-latent MSE (all, failures) and the sampled-chunk action L1 on the clean
    expert episodes among them. Every model sees the same episodes, steps and seeds."""
    import json

    from flywheel.episodes import select_episodes
    from tasks.evaluation import offline_scores
    from tasks.rollouts import resolve_checkpoint

    cfg, ws = setup(profile, config, set_, home)
    if not ws.lake.parts("episodes"):
        raise UserError(f"the lake at {ws.lake.root} has no episodes")
    ids = [str(x) for x in select_episodes(ws.lake, where).column("episode_id").to_pylist()]
    if not ids:
        raise UserError(f"no episode matches --where {where!r}")
    rows = {}
    for model in models:
        resolved = resolve_checkpoint(model, cfg, ws)
        s = offline_scores(cfg, ws, resolved, ids, seed=seed)
        rows[resolved.version_label] = {"value_auc": s.value_auc, "wm_mse": s.wm_mse,
                                        "wm_mse_failures": s.wm_mse_failures, "action_l1": s.action_l1,
                                        "episodes": s.episodes, "successes": s.successes, "samples": s.samples}
    if as_json:
        print(json.dumps(rows))
        return
    from rich.table import Table

    table = Table(title=f"Offline scores on {len(ids)} episodes ({where})")
    for col in ("model", "value AUC", "WM MSE", "WM MSE failures", "action L1", "episodes (successes)"):
        table.add_column(col)
    for label, r in rows.items():
        table.add_row(label, f"{r['value_auc']:.3f}", f"{r['wm_mse']:.1f}", f"{r['wm_mse_failures']:.1f}",
                      f"{r['action_l1']:.3f}", f"{r['episodes']} ({r['successes']})")
    console.print(table)


def _describe(cfg: Any, resolved: Any) -> dict[str, Any]:
    """A checkpoint's identity and contents, and whether this machine has the components it needs."""
    from cosmos_policy.checkpoint_io import read_metadata
    from cosmos_policy.latent_layout import LatentLayout
    from flywheel.model_setup import component_paths
    from tasks.registry import RegistryError, check_components

    meta = read_metadata(resolved.path)
    model_cfg, extra = meta["config"], meta.get("extra", {})
    try:
        found = check_components(resolved.path, **component_paths(cfg))
    except RegistryError as exc:
        found = {"error": str(exc)}
    comps = {role: f"{c['kind']} {c['fingerprint']}" for role, c in meta.get("components", {}).items()}
    comps["found here"] = ", ".join(f"{k}={v}" for k, v in found.items() if v) or "nothing needed (stand-ins)"
    train = dict(model_cfg.get("train", {}))
    return {"version": resolved.version_label, "path": str(resolved.path),
            "layout": f"{meta['layout']['name']} [{LatentLayout.from_dict(meta['layout']).describe()}]",
            "backbone": {k: model_cfg["backbone"][k] for k in ("num_layers", "num_attention_heads",
                                                                 "attention_head_dim", "text_embed_dim")
                         if k in model_cfg["backbone"]},
            "value inputs": model_cfg.get("value_inputs", "state_action_future"), "components": comps, "train": train,
            "extra": {k: v for k, v in extra.items() if not isinstance(v, dict | list)}}
