"""The README's Python quickstart runs as written: its ``>>>`` examples are doctests."""

import doctest
import os

import pytest

from conftest import REPO


@pytest.mark.slow
def test_readme_python_examples(tmp_path, monkeypatch):
    (tmp_path / "examples").symlink_to(REPO / "examples")  # the README's relative paths, models written here
    monkeypatch.chdir(tmp_path)
    result = doctest.testfile(str(REPO / "README.md"), module_relative=False, verbose=False,
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 20
    assert result.failed == 0, f"{result.failed} README examples failed (see the output above)"
    assert os.path.isdir(tmp_path / "transfuse-models" / "py")
