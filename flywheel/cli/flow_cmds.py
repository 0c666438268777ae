"""``flywheel collect``: run a flow on Prefect (ephemeral API unless ``PREFECT_API_URL`` is set)."""

from __future__ import annotations

import time

from flywheel.cli.common import ConfigOpt, HomeOpt, ProfileOpt, SetOpt, console, handle_errors, setup
from flywheel.cli.query_cmd import print_table


@handle_errors
def collect(profile: ProfileOpt = "cpu", config: ConfigOpt = None, set_: SetOpt = None, home: HomeOpt = None) -> None:
    """Expert demos -> lake -> noisy-expert and random rollouts on Ray -> latent cache -> DuckDB report (Prefect)."""
    import pyarrow as pa

    cfg, ws = setup(profile, config, set_, home)
    from flows.collect import collect_flow

    t0 = time.perf_counter()
    out = collect_flow(profile=profile, config_path=str(config) if config else None, overrides=list(set_ or []),
                      home=str(ws.home))
    for s in out["summaries"]:
        console.print(f"[bold]{s.policy}[/] on {s.suite} ({s.source}): {s.successes}/{s.episodes} successes, "
                      f"{s.written} written, {s.wall_s:.0f}s", highlight=False)
    for lat in out["latents"]:
        console.print(f"latents of {lat['suite']}: {lat['encoded']} episodes encoded, {lat['cached']} already cached "
                      f"({lat['tokenizer']})", highlight=False)
    for title, rows in out["report"].items():
        print_table(pa.Table.from_pylist(rows) if rows else pa.table({}), "table", title)
    console.print(f"collect flow finished in {time.perf_counter() - t0:.0f}s; lake at {ws.lake.root}")
