"""``flywheel model init`` and ``flywheel model latents``: starting checkpoints and the latent cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flywheel.cli.common import ConfigOpt, HomeOpt, ProfileOpt, SetOpt, UserError, console, handle_errors, setup

model_app = typer.Typer(help="Cosmos Policy model: starting checkpoints, cached latents.", no_args_is_help=True)

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
