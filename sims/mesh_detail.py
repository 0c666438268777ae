"""Coarser visual meshes for cheap software rendering (a CPU lever; physics is untouched).

A LIBERO-Object scene holds about 383,000 mesh triangles, 308,000 of them in purely visual geoms (scanned
objects, the basket, the Panda's links). Mesa's software rasteriser (``llvmpipe``, what a machine without a GPU
renders with) spends most of a 64 px frame transforming them. :func:`simplify_visual_meshes` merges each visual
mesh's vertices on a grid (vertex clustering: every vertex moves to the first vertex of its grid cell, triangles
that collapse are dropped) and rewrites the mesh's triangles in place, in the compiled ``MjModel``.

Only meshes whose every geom is non-colliding (``contype == conaffinity == 0``) are touched, and only the
triangle arrays (``mesh_face``, ``mesh_facenormal``, ``mesh_facetexcoord``, ``mesh_facenum``) change: vertices,
inertias, convex hulls and contacts are those of the original model, so the simulation is the same to the bit.
Kept triangles keep their normals and texture coordinates. A render context made before the change must be
rebuilt (it holds the meshes it uploaded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SimplifyStats:
    meshes: int  # visual meshes simplified
    faces_before: int  # triangles of those meshes
    faces_after: int


def cluster_faces(vertices: np.ndarray, faces: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Vertex clustering on a grid of ``cell`` (same units as ``vertices``).

    Args:
        vertices: ``(V, 3)``.
        faces: ``(F, 3)`` vertex indices.

    Returns:
        ``(kept (F',) indices into faces, new_faces (F', 3))``: the triangles that stay non-degenerate, with their
        corners moved to their cell's representative vertex (an existing vertex: the first of the cell).
    """
    if cell <= 0:
        raise ValueError(f"cell must be positive, got {cell}")
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if len(v) == 0 or len(f) == 0:
        return np.arange(0), f.reshape(0, 3)
    keys = np.floor((v - v.min(0)) / cell).astype(np.int64)
    _, cell_of = np.unique(keys, axis=0, return_inverse=True)
    cell_of = cell_of.reshape(-1)
    first = np.full(int(cell_of.max()) + 1, len(v), dtype=np.int64)
    np.minimum.at(first, cell_of, np.arange(len(v)))
    g = first[cell_of][f]
    ok = (g[:, 0] != g[:, 1]) & (g[:, 1] != g[:, 2]) & (g[:, 0] != g[:, 2])
    idx = np.nonzero(ok)[0]
    _, unique_rows = np.unique(np.sort(g[idx], axis=1), axis=0, return_index=True)  # drop duplicate triangles
    kept = idx[np.sort(unique_rows)]
    return kept, g[kept]


def visual_only_meshes(model: Any) -> list[int]:
    """Ids of meshes used only by non-colliding geoms (``model``: a ``mujoco.MjModel``)."""
    import mujoco

    used: dict[int, bool] = {}
    mesh_type = int(mujoco.mjtGeom.mjGEOM_MESH)
    for g in range(model.ngeom):
        if int(model.geom_type[g]) != mesh_type:
            continue
        mesh = int(model.geom_dataid[g])
        visual = int(model.geom_contype[g]) == 0 and int(model.geom_conaffinity[g]) == 0
        used[mesh] = used.get(mesh, True) and visual
    return sorted(m for m, visual in used.items() if visual)


def simplify_visual_meshes(model: Any, resolution: int) -> SimplifyStats:
    """Cluster every visual-only mesh of ``model`` on a grid of ``resolution`` cells along its bounding-box
    diagonal (larger = finer; about 30 keeps a 64 px LIBERO frame within a few grey levels). In place."""
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    meshes, before, after = 0, 0, 0
    has_normals = model.mesh_facenormal.shape[0] == model.mesh_face.shape[0]
    has_tex = model.mesh_facetexcoord.shape[0] == model.mesh_face.shape[0]
    for mesh in visual_only_meshes(model):
        vadr, vnum = int(model.mesh_vertadr[mesh]), int(model.mesh_vertnum[mesh])
        fadr, fnum = int(model.mesh_faceadr[mesh]), int(model.mesh_facenum[mesh])
        verts = np.array(model.mesh_vert[vadr:vadr + vnum])
        faces = np.array(model.mesh_face[fadr:fadr + fnum])
        diag = float(np.linalg.norm(verts.max(0) - verts.min(0))) if vnum else 0.0
        if fnum == 0 or diag == 0.0:
            continue
        kept, new_faces = cluster_faces(verts, faces, diag / resolution)
        if len(kept) == 0 or len(kept) >= fnum:
            continue
        k = len(kept)
        if has_normals:
            model.mesh_facenormal[fadr:fadr + k] = np.array(model.mesh_facenormal[fadr:fadr + fnum])[kept]
        if has_tex:
            model.mesh_facetexcoord[fadr:fadr + k] = np.array(model.mesh_facetexcoord[fadr:fadr + fnum])[kept]
        model.mesh_face[fadr:fadr + k] = new_faces
        model.mesh_facenum[mesh] = k
        meshes, before, after = meshes + 1, before + fnum, after + k
    return SimplifyStats(meshes, before, after)
