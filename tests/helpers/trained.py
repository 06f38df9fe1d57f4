"""A demo-size model trained once per test session, shared by the deploy and the CLI export tests.

Training takes 30-60 s on a 2-core machine, too long to repeat in each test module; a pytest fixture
imported into two modules would run twice (one definition per module), so the result is kept in the
session's ``config.stash`` instead and each module's fixture asks for it here.
"""

from __future__ import annotations

import pytest

from sepconv.demo import DEMO_BATCH_SIZE, DEMO_LR, demo_config
from sepconv.train.config import TrainResult
from sepconv.train.trainer import fit

# Two epochs of the demo recipe reach about 97 % test accuracy on mnist5k (one reaches about 94 %):
# enough for int8 to have something real to lose.
EPOCHS = 2
SEED = 0

_TRAINED = pytest.StashKey[TrainResult]()


def trained_separable_cnn(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> TrainResult:
    """``separable_cnn`` trained with the demo recipe on mnist5k (seed 0) in a run folder of its own."""
    stash = request.config.stash
    if _TRAINED not in stash:
        config = demo_config(
            "separable_cnn",
            tmp_path_factory.mktemp("demo-run"),
            dataset="mnist5k",
            epochs=EPOCHS,
            batch_size=DEMO_BATCH_SIZE,
            lr=DEMO_LR,
            seed=SEED,
            progress=False,
        )
        stash[_TRAINED] = fit(config)
    return stash[_TRAINED]
