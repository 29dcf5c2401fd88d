"""Pytest setup for tests/detection: registers the markers used here (harmless if the root conftest does too)."""


def pytest_configure(config):
    config.addinivalue_line("markers", "oracle: compares against Model Garden (needs tf-models-official)")
    config.addinivalue_line("markers", "slow: kept out of `make test`")
