"""The AMP emulation casts each weight once per autocast region, as CUDA autocast caches it."""

import torch

from sa_profiler.amp import AutocastEmulation

MiB = 2**20


def test_weight_cast_is_cached_within_a_region_and_dropped_after():
    amp = AutocastEmulation(torch.float16)
    weight = torch.nn.Parameter(torch.empty(256, 256, device="meta"))
    activation = torch.empty(8, 256, device="meta", requires_grad=True) * 2  # not a leaf: never cached
    linear = torch.nn.functional.linear
    with amp.region():
        (a1, w1), _ = amp.cast(linear, (activation, weight), {})
        (a2, w2), _ = amp.cast(linear, (activation, weight), {})
        assert w1.dtype == torch.float16 and w1 is w2
        assert a1.dtype == torch.float16 and a1 is not a2
        assert len(amp.cache) == 1
    assert amp.cache == {}
    (_, w3), _ = amp.cast(linear, (activation, weight), {})
    assert w3 is weight  # autocast is off outside the region


def test_a_weight_used_three_times_costs_one_cast():
    """Simulated AMP step of two layers applied three times: one float16 copy of each weight
    (16 MiB), not three (without the cache the four extra copies add 64 MiB)."""
    from sa_profiler import gpus
    from sa_profiler.fit import run_step

    class Thrice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4096, 2048, bias=False)
            self.back = torch.nn.Linear(2048, 4096, bias=False)

        def forward(self, x):
            return self.back(self.lin(self.back(self.lin(self.back(self.lin(x))))))

    class Once(Thrice):
        def forward(self, x):
            return self.back(self.lin(x))

    gpu = gpus.lookup("h100")
    thrice = run_step(Thrice, (4096,), 1, gpu, optimizer="sgd", amp="fp16")
    once = run_step(Once, (4096,), 1, gpu, optimizer="sgd", amp="fp16")
    assert thrice.status == once.status == "ok"
    # the same casts; what grows is tiny activations and one float16 sum of a weight's three
    # gradients (16 MiB)
    assert thrice.peak_total - once.peak_total <= 17 * MiB, (thrice.peak_total, once.peak_total)
