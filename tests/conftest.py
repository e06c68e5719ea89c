import os

import pytest
import torch
from hypothesis import settings

# Randomised tests draw the same cases on every run, here and in CI ("ci", the default), so a
# commit passes or fails for good; every counterexample ever found is kept as an @example.
# To look for new ones: python3 -m pytest -m slow -k properties --hypothesis-profile explore
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("SA_PROFILER_HYPOTHESIS", "ci"))

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def trackers(monkeypatch):
    """Every tracker made from now on, with its op log and timeline on."""
    from sa_profiler.engine import tracker as tracking

    made = []
    init = tracking.MemoryTracker.__init__

    def logged(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.timeline, self.op_log = [], []
        made.append(self)

    monkeypatch.setattr(tracking.MemoryTracker, "__init__", logged)
    return made


@pytest.fixture(scope="module")
def one_thread():
    """Real CPU steps on one intra-op thread: on a small shared machine several threads per conv
    contend and a step takes seconds. The bytes a step allocates do not depend on it. A module
    asks for it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
