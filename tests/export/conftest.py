"""Fixtures of the export tests: the embedded demo CT cases."""
import pytest


@pytest.fixture(scope="session")
def demo_cases():
    from liverzoo.data import demo

    return demo.demo_cases()
