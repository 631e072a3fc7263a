"""Fixtures of the training tests."""
import pytest

from tests.training.helpers import write_phantom_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Phantom TFRecord shards: phantom0, phantom1 train; phantom2 validates."""
    return write_phantom_shards(tmp_path_factory.mktemp("phantom_shards"))
