"""Shared pytest set-up: quiet TF, small thread pools, paths to real CT."""
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_CT = REPO.parent / "shared" / "data" / "ct"


@pytest.fixture(scope="session")
def shared_ct_dir():
    """../shared/data/ct (real CT); tests that need it skip where it is absent."""
    if not SHARED_CT.is_dir():
        pytest.skip("../shared/data/ct not present")
    return SHARED_CT
