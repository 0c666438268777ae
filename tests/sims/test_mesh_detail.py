"""Vertex clustering of visual meshes (pure NumPy part; the rendering check is in test_sim_libero)."""

import numpy as np
import pytest

from sims.mesh_detail import cluster_faces


def _grid_sphere(n: int) -> tuple[np.ndarray, np.ndarray]:
    """A UV sphere of radius 1 with ``n`` rings and ``2n`` segments."""
    th, ph = np.meshgrid(np.linspace(0.05, np.pi - 0.05, n), np.linspace(0, 2 * np.pi, 2 * n, endpoint=False),
                         indexing="ij")
    v = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], -1).reshape(-1, 3)
    idx = np.arange(n * 2 * n).reshape(n, 2 * n)
    a, b = idx[:-1], np.roll(idx, -1, axis=1)[:-1]
    c, d = idx[1:], np.roll(idx, -1, axis=1)[1:]
    f = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([b, d, c], -1).reshape(-1, 3)])
    return v, f


def test_clustering_keeps_the_shape_with_fewer_triangles():
    v, f = _grid_sphere(60)
    kept, new = cluster_faces(v, f, cell=2 * np.sqrt(3) / 16)
    assert 50 < len(kept) < len(f) / 5
    assert new.shape == (len(kept), 3)
    assert np.all((new[:, 0] != new[:, 1]) & (new[:, 1] != new[:, 2]) & (new[:, 0] != new[:, 2]))
    used = np.unique(new)
    assert np.allclose(np.linalg.norm(v[used], axis=1), 1.0)  # corners are original vertices
    assert len({tuple(sorted(t)) for t in new.tolist()}) == len(new)  # no duplicate triangles


def test_a_fine_grid_changes_nothing_and_bad_cells_are_refused():
    v, f = _grid_sphere(10)
    kept, new = cluster_faces(v, f, cell=1e-6)
    assert np.array_equal(kept, np.arange(len(f))) and np.array_equal(new, f)
    with pytest.raises(ValueError, match="cell"):
        cluster_faces(v, f, cell=0)
