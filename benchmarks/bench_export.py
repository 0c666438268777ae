"""LeRobot export benchmark: ``flywheel export lerobot`` vs lerobot's own writer fed the same frames.

Usage: ``python benchmarks/bench_export.py [--quick]``.

Export side: ``flywheel.export.export_lerobot`` (what ``flywheel export lerobot`` runs) over a lake holding
rollout-shaped episodes (100 steps, proprio 9, action 7, two 64x64 cameras rendered every 4th step and at the
last, stored as PNG): it selects the episodes, reads their steps from DuckDB, decodes the PNGs, holds the last
rendered frame on steps without a render, and writes through ``LeRobotDataset.add_frame``/``save_episode``.
LeRobot side: ``LeRobotDataset.create`` (same features, fps and options) + ``add_frame`` + ``save_episode`` +
``finalize`` fed the same frames, already decoded to numpy arrays before the clock starts. So the ratio is
the exporter's overhead (query, PNG decode, conversion) on top of lerobot's own writing. Both sides write
the same episodes into a fresh folder, alternate ABBA, median of repeats; one untimed warm-up each (imports).
The last stdout line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flywheel.compat import set_default_env  # noqa: E402

set_default_env()
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # one progress bar per episode, on both sides
warnings.filterwarnings("ignore", "Converting input from bool", RuntimeWarning)  # lerobot's stats of bool features

from storage_schemas import EpisodeData, EpisodeMeta, LakeLayout, LakeWriter, rollout_episode_id  # noqa: E402
from storage_schemas.records import decode_png, encode_png  # noqa: E402

CAMERAS = ("agentview", "eye_in_hand")
SUITE = "libero_object"
FPS = 20  # the exporter's default


def _frame(rng: np.random.Generator, size: int) -> np.ndarray:
    """A rendered-looking frame: smooth 8x8 blocks plus a little sensor noise."""
    blocks = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.int16)
    img = np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1) + rng.integers(-6, 7, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def synthetic_episodes(n: int, steps: int, image_size: int, image_every: int, seed: int = 0) -> list[EpisodeData]:
    rng = np.random.default_rng(seed)
    image_steps = sorted(set(range(0, steps, image_every)) | {steps - 1})
    out = []
    for i in range(n):
        meta = EpisodeMeta(episode_id=rollout_episode_id("rollout", 1, SUITE, i % 10, i, seed, "model"),
                           source="rollout", suite=SUITE, task_id=i % 10, instruction=f"put object {i % 10} in the basket",
                           dataset_id="bench", iteration=1, policy="model", seed=seed, init_state_index=i,
                           success=bool(i % 3))
        images = {c: {t: encode_png(_frame(rng, image_size)) for t in image_steps} for c in CAMERAS}
        out.append(EpisodeData(meta, rng.uniform(-1, 1, (steps, 9)), rng.uniform(-1, 1, (steps, 7)), images))
    return out


def features(image_size: int) -> dict:
    """The feature dict ``export_lerobot`` declares for this data."""
    image = {"dtype": "image", "shape": (image_size, image_size, 3), "names": ["height", "width", "channel"]}
    return {**{f"observation.images.{c}": image for c in CAMERAS},
            "observation.state": {"dtype": "float32", "shape": (9,), "names": None},
            "action": {"dtype": "float32", "shape": (7,), "names": None},
            "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
            "next.done": {"dtype": "bool", "shape": (1,), "names": None},
            "next.success": {"dtype": "bool", "shape": (1,), "names": None},
            "value_target": {"dtype": "float32", "shape": (1,), "names": None}}


def decoded_frames(episodes: list[EpisodeData]) -> list[list[dict]]:
    """The frames ``export_lerobot`` hands to ``add_frame``, built ahead: episodes in id order (as the export
    selects them), images decoded, the last rendered frame held on steps without a render."""
    out = []
    for ep in sorted(episodes, key=lambda e: e.meta.episode_id):
        n, ok = ep.length, ep.meta.success
        value, held, frames = ep.value_targets(), {}, []
        for t in range(n):
            for cam in CAMERAS:
                if t in ep.images[cam]:
                    held[cam] = decode_png(ep.images[cam][t])
            last = t == n - 1
            frames.append({**{f"observation.images.{c}": held[c] for c in CAMERAS},
                           "observation.state": ep.proprio[t], "action": ep.actions[t],
                           "next.reward": np.array([1.0 if last and ok else 0.0], np.float32),
                           "next.done": np.array([last]), "next.success": np.array([last and ok]),
                           "value_target": value[t:t + 1], "task": ep.meta.instruction})
        out.append(frames)
    return out


def lerobot_direct(episodes: list[list[dict]], out: Path, image_size: int) -> int:
    from flywheel.compat import ensure_torchvision

    ensure_torchvision()  # as export_lerobot does before importing lerobot
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset.create(repo_id=f"local/{out.name}", fps=FPS, features=features(image_size), root=out,
                               use_videos=False)
    for frames in episodes:
        for frame in frames:
            ds.add_frame(dict(frame))  # add_frame pops keys: a shallow copy keeps the prepared frame intact
        ds.save_episode()
    ds.finalize()
    return sum(len(f) for f in episodes)


def flywheel_export(lake: LakeLayout, out: Path, where: str = "true") -> int:
    from flywheel.export import export_lerobot

    return export_lerobot(lake, out, where, fps=FPS).frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer episodes and repeats (under a minute)")
    args = ap.parse_args()
    n_episodes, repeats = (3, 2) if args.quick else (16, 4)
    steps, image_size, image_every = 100, 64, 4  # FlywheelConfig defaults: sim.image_size 64, demos.image_every 4
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        episodes = synthetic_episodes(n_episodes, steps, image_size, image_every)
        writer = LakeWriter(work / "lake")
        writer.write_episodes(episodes)
        frames = decoded_frames(episodes)
        first = min(e.meta.episode_id for e in episodes)
        # Untimed warm-up of both sides on one episode: imports (torch, lerobot, duckdb), first-call set-up.
        flywheel_export(writer.layout, work / "warm-export", f"episode_id = '{first}'")
        lerobot_direct(frames[:1], work / "warm-lerobot", image_size)

        times: dict[str, list[float]] = {"export": [], "lerobot": []}
        counts: dict[str, int] = {}

        def run(side: str, r: int) -> None:
            out = work / f"{side}{r}"
            t0 = time.perf_counter()
            counts[side] = (flywheel_export(writer.layout, out) if side == "export"
                            else lerobot_direct(frames, out, image_size))
            times[side].append(time.perf_counter() - t0)
            shutil.rmtree(out)

        for r in range(repeats):  # ABBA: the machine's noise and drift hit both sides alike
            for side in ("export", "lerobot") if r % 2 == 0 else ("lerobot", "export"):
                run(side, r)
        assert counts["export"] == counts["lerobot"] == n_episodes * steps, counts
        med = {k: statistics.median(v) for k, v in times.items()}
        fps = {k: counts[k] / med[k] for k in med}
        result = {"quick": args.quick, "export_over_lerobot": round(fps["export"] / fps["lerobot"], 3),
                  "export_frames_per_s": round(fps["export"], 1), "lerobot_frames_per_s": round(fps["lerobot"], 1),
                  "export_s": round(med["export"], 3), "lerobot_s": round(med["lerobot"], 3),
                  "episodes": n_episodes, "frames": counts["export"], "cameras": len(CAMERAS), "image_size": image_size,
                  "repeats": repeats}
        print(f"export {n_episodes} episodes / {result['frames']} frames ({len(CAMERAS)} cameras {image_size}px): "
              f"flywheel export {result['export_frames_per_s']} frames/s vs lerobot add_frame/save_episode "
              f"{result['lerobot_frames_per_s']} frames/s -> ratio {result['export_over_lerobot']}")
        print(json.dumps(result))


if __name__ == "__main__":
    main()
