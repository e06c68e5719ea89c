"""Which module an SDPA call and its bytes belong to: the innermost module running, or the top
level when the model's own forward calls it; only a module that calls attention is a layer."""

import torch.nn.functional as F
from torch import nn

from sa_profiler.models.fit import fit
from zoo_cases import SdpaBlock


class TopLevel(nn.Module):
    """Attention in a block, then in the model's own forward, then a plain layer."""

    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(SdpaBlock())
        self.head = nn.Linear(16, 16)

    def forward(self, x):
        x = self.block(x)
        q = x.view(x.shape[0], x.shape[1], 2, 8).transpose(1, 2)
        x = F.scaled_dot_product_attention(q, q, q).transpose(1, 2).reshape(x.shape)
        return self.head(x)


def test_calls_are_named_by_the_innermost_module_or_the_top_level():
    result = fit(TopLevel, ["10x16"], 2, "t4", conversions=(), timeline=False)
    step = result.step
    modules = sorted(c["module"] for c in step.attention_calls)
    assert modules == ["(top level)", "block.0"], step.attention_calls
    assert result.to_json()["attention_layers"] == 1  # the block's SdpaBlock; the top level is no module
    assert step.attention_bytes > 0
    # the top level's own attention output is the model's own code: no module made it
    assert set(step.modules) == {"block", "(the model's own code, outside its modules)"}
