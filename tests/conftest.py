"""Shared test settings: deterministic seeds and a hypothesis profile sized for a 2-core CI machine."""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("SEPCONV_HYPOTHESIS_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # The same examples on every run and machine (no random choice, no example database): a
    # verdict must not depend on which examples a run happened to draw.
    derandomize=True,
    database=None,
)
settings.load_profile("ci")


def _share_the_cores_between_workers() -> None:
    # Under pytest-xdist each worker would start as many threads as the machine has cores, so two
    # workers on 2 cores run 4 OpenMP threads that spin-wait for each other: the suite measured 15.6
    # minutes so. Each worker (and any process it starts: the demo, DDP ranks) gets its share instead.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers <= 1:
        return
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, threads)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


_share_the_cores_between_workers()


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _private_cache_folder(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # The cost and sensitivity tables default to the user's ~/.cache/sepconv: a test (or a command it
    # runs) must neither read what the developer measured nor leave its own figures there, and one
    # test's table must not answer another's.
    monkeypatch.setenv("SEPCONV_CACHE_DIR", str(tmp_path_factory.mktemp("sepconv-cache")))
