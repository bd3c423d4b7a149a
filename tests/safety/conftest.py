"""Shared for the safety tests: a tiny random reader saved like `metaqa train` saves one, and a
copy of the embedded sample CSV (an input the tests can place inside output folders)."""
import shutil

import pytest

from metaqa.config import PACKAGE_DIR
from tests.export.conftest import tiny_reader

SAMPLE = PACKAGE_DIR / "data" / "sample" / "sample_qa.csv"


@pytest.fixture(scope="session")
def reader(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("reader")
    tiny_reader(path, tokenizer)
    return path


@pytest.fixture
def user_csv(tmp_path):
    """The sample CSV as a user's own file in a folder of their own."""
    folder = tmp_path / "my_data"
    folder.mkdir()
    return shutil.copy(SAMPLE, folder / "qa.csv")
