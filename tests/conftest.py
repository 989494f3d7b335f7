"""Fixtures shared by the test modules."""

from __future__ import annotations

import socket

import pytest
from outputs import Outputs


@pytest.fixture
def no_network(monkeypatch):
    """Any socket the code under test opens fails: proves a step runs offline (no model/NLTK/hub downloads)."""

    def refuse(*args, **kwargs):
        raise OSError("network access attempted during an offline test")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def one_thread():
    """torch on one intra-op thread for a whole test module (`pytestmark = pytest.mark.usefixtures("one_thread")`):
    tests/trained.py::one_thread says why."""
    from trained import one_thread as single_thread

    with single_thread():
        yield


@pytest.fixture(scope="session")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Outputs:
    """Real OUTPUT folders made by `reasonpipe run` (tests/outputs.py), each built once per session on first use.
    They are shared: a test that alters one works on a copy."""
    return Outputs(tmp_path_factory.mktemp("outputs"))


@pytest.fixture(scope="session")
def memorised(tmp_path_factory: pytest.TempPathFactory):
    """A tiny model trained by `reasonpipe train` to memorise 8 problems (tests/trained.py), built once per session.
    Shared: tests read it and write only into their own folders."""
    from trained import memorised_run

    return memorised_run(tmp_path_factory.mktemp("memorised"))
