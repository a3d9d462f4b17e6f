"""Fixtures shared by every pytest suite under tests/."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "lib"))
import seamtest  # noqa: E402


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A fresh test PKI (tests/certs/gen.sh) shared by one pytest session."""
    return seamtest.gen_pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture
def procs():
    """Start processes with procs.start([...]); all are ended after the test."""
    ps = seamtest.Procs()
    yield ps
    ps.stop_all()
