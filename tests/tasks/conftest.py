import pytest


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    """One local Ray instance (2 CPUs) for the whole session; test code importable in workers."""
    import os

    import ray

    from flywheel.compat import set_default_env

    set_default_env()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(tmp_path_factory.mktemp("ray")),
             runtime_env={"env_vars": {"PYTHONPATH": root, "OMP_NUM_THREADS": "1"}}, logging_level="warning")
    yield ray
    ray.shutdown()
