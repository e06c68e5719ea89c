import pytest
import torch

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
