import os

import pytest


@pytest.fixture(scope="session")
def _ray_temp(tmp_path_factory):
    return str(tmp_path_factory.mktemp("ray"))


@pytest.fixture
def ray_local(_ray_temp):
    """A local Ray instance (2 CPUs), started on first use and kept for the session; restarted if a test (the
    two-node cluster test) shut it down. Test code is importable in workers."""
    import ray

    from flywheel.compat import set_default_env

    if not ray.is_initialized():
        set_default_env()
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=_ray_temp,
                 runtime_env={"env_vars": {"PYTHONPATH": root, "OMP_NUM_THREADS": "1"}}, logging_level="warning")
    return ray


@pytest.fixture(scope="session", autouse=True)
def _ray_shutdown_at_end():
    yield
    import ray

    ray.shutdown()
