"""The zoo's models at test size, and PyTorch's MemTracker around a real CPU step of one.

Batches and inputs are small but large enough that each step's peak comes while activations
are held (forward or backward), not in the optimizer step, so that the step tests see them.

Each case is a model as `sa-profile fit` loads it (FILE.py:NAME with small --arg values), its
inputs as `--input` writes them, a batch, and what its attention is: how many attention layers
`fit` should find and how many `scaled_dot_product_attention` calls one forward makes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from sa_profiler.models import inputs as model_inputs

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    id: str
    spec: str
    args: dict = field(default_factory=dict)
    inputs: tuple = ()
    batch: int = 2
    attention_layers: int = 0
    sdpa_calls: int = 0  # per forward
    sagan: bool = False  # has SAGAN layers (fit converts them)
    variant: bool = False  # the same model with another input or head size (not repeated in every test)

    @property
    def model(self) -> str:
        """FILE.py:NAME with the file's absolute path (the tests run from any folder)."""
        return str(REPO / self.spec)

    def cli_args(self) -> list[str]:
        out = [self.model, "--batch", str(self.batch)]
        for spec in self.inputs:
            out += ["--input", spec]
        for key, value in self.args.items():
            out += ["--arg", f"{key}={value}"]
        return out


SAGAN_REPO = "examples/zoo/sagan_repo/sagan_models.py"
UNET_SMALL = {"block_out_channels": (16, 16), "attention": (False, True), "norm_num_groups": 8}
CASES = [
    # timm ViT: 2 blocks of 4 heads of 16, 17 tokens (16 patches of 8 + the class token)
    Case("vit", "examples/zoo/vit.py:vit_tiny_test", {}, ("3x32x32",), 16, 2, 2),
    # diffusers UNet2DModel, AttnProcessor2_0: heads of 8 at 8x8 and 4x4 (down, mid, up), a 0-dim timestep
    Case("unet", "examples/zoo/unet.py:unet", {}, ("3x16x16", "timestep=scalar:int64"), 4, 7, 7),
    # ... and a timestep per sample
    Case("unet-per-sample-t", "examples/zoo/unet.py:unet", {}, ("3x16x16", "timestep=B:int64"), 4, 7, 7, variant=True),
    # two stages (attention in the lower one, the middle and its up block): fewer ops for the per-card tests;
    # heads of 8, and heads of 4 (below the memory-efficient kernel's fp16 alignment on sm7x, not a multiple of 8)
    Case("unet-small", "examples/zoo/unet.py:UNet2DModel", dict(UNET_SMALL, attention_head_dim=8),
         ("3x8x8", "timestep=scalar:int64"), 2, 4, 4, variant=True),
    Case("unet-small-d4", "examples/zoo/unet.py:UNet2DModel", dict(UNET_SMALL, attention_head_dim=4),
         ("3x8x8", "timestep=scalar:int64"), 2, 4, 4, variant=True),
    # nn.MultiheadAttention after a CNN, 2 heads of 8 over 8x8 tokens: SDPA path and explicit weights
    Case("mha", "examples/zoo/mha.py:cnn_mha", {"width": 16, "heads": 2}, ("3x32x32",), 2, 1, 1),
    Case("mha-weights", "examples/zoo/mha.py:cnn_mha", {"width": 16, "heads": 2, "need_weights": True},
         ("3x32x32",), 2, 1, 0),
    # Hugging Face BERT with SDPA: int64 ids and mask, additive B x 1 x 1 x S mask, dropout 0.1, heads of 32
    Case("bert", "examples/zoo/bert.py:bert_mini", {"vocab_size": 1000, "hidden": 64, "layers": 2, "heads": 2},
         ("input_ids=32:int64", "attention_mask=32:int64"), 16, 2, 2),
    # the original SAGAN code (spectral.py beside it: frozen u/v Parameters, BatchNorm)
    Case("sagan-repo-G", f"{SAGAN_REPO}:Generator", {"batch_size": 2, "image_size": 64, "conv_dim": 8, "z_dim": 16},
         ("16",), 2, 2, 0, sagan=True),
    Case("sagan-repo-D", f"{SAGAN_REPO}:Discriminator", {"batch_size": 2, "image_size": 64, "conv_dim": 8},
         ("3x64x64",), 2, 2, 0, sagan=True),
    Case("resnet50-tiny", "examples/zoo/resnet.py:resnet_tiny_test", {}, ("3x32x32",), 8, 0, 0),
    # the project's own examples
    Case("sagan-G", "examples/sagan.py:Generator", {"ch": 8, "image_size": 32}, ("128",), 2, 2, 0, sagan=True),
    Case("sagan-D", "examples/sagan.py:Discriminator", {"ch": 8, "image_size": 32}, ("3x32x32",), 2, 2, 0, sagan=True),
    Case("resnet-attn", "examples/classifier.py:resnet_attn", {"width": 16, "num_classes": 10}, ("3x32x32",), 8, 2, 0,
         sagan=True),
]
BY_ID = {c.id: c for c in CASES}


def zoo(case_id: str):
    """A zoo case as `run_step` takes it: (factory, inputs, batch)."""
    case = BY_ID[case_id]
    from sa_profiler.models.fit import load

    return load(case.model, case.args), list(case.inputs), case.batch


# small configurations of the real libraries' models (transformers), and a padded mask for them
BERT = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128,
        "vocab_size": 1000, "max_position_embeddings": 64}
GPT2 = {"n_layer": 2, "n_embd": 64, "n_head": 2, "vocab_size": 1000, "n_positions": 64}
PADDED = ("input_ids=32:int64:range=0..1000", "attention_mask=32:int64:pad=0.25")
MODELS = [c for c in CASES if not c.variant]  # one case per model


def first_float(out) -> torch.Tensor:
    """The first floating-point tensor of a model's output (tuple, dict, dataclass), as fit's loss takes it."""
    if isinstance(out, torch.Tensor) and out.is_floating_point():
        return out
    if isinstance(out, dict):
        out = list(out.values())
    elif hasattr(out, "__dataclass_fields__"):
        out = [getattr(out, f) for f in out.__dataclass_fields__]
    for item in out:
        if isinstance(item, torch.Tensor) and item.is_floating_point():
            return item
    raise TypeError(f"no floating-point output in {type(out).__name__}")


def frozen_to_buffers(model: nn.Module) -> int:
    """Re-register every frozen Parameter as a buffer holding the same storage; returns their bytes.

    MemTracker's pre-forward hook registers a gradient hook on every parameter of a module the
    first time it sees it (`_track_module_params_and_buffers(install_grad_hooks=True)`), and
    `Tensor.register_hook` raises on a tensor that does not require grad: spectral.py's
    `weight_u`/`weight_v` stop the step. As buffers MemTracker tracks the same bytes (its
    Buffer category, like BatchNorm's statistics); nothing else changes: they take no gradient
    and no optimizer state either way, and spectral.py updates them through `.data`."""
    moved = 0
    for module in model.modules():
        for name, p in list(module.named_parameters(recurse=False)):
            if not p.requires_grad:
                delattr(module, name)
                module.register_buffer(name, p.detach())
                moved += p.numel() * p.element_size()
    return moved


def memtracker_peak(factory, inputs, batch: int, *, optimizer: str = "adam", accumulation: int = 1,
                    amp: str | None = None) -> tuple[int, int]:
    """PyTorch's MemTracker around two real CPU training steps (Adam by default, as `run_step`'s;
    any optimizer `run_step` builds; `accumulation` micro-steps of loss / k per optimizer step;
    `amp="bf16"`: CPU autocast): the peak total bytes over both, and the frozen-parameter bytes
    it tracked as buffers."""
    from torch.distributed._tools.mem_tracker import MemTracker

    from sa_profiler.models.step import _optimizer

    torch.manual_seed(0)
    with torch.device("cpu"):
        model = factory()
    model.train()
    frozen = frozen_to_buffers(model)
    args, kwargs = model_inputs.make(model_inputs.parse_all(list(inputs)), batch, "cpu")
    opt = _optimizer(optimizer, [p for p in model.parameters() if p.requires_grad], None)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if amp == "bf16" else contextlib.nullcontext

    def step():
        opt.zero_grad(set_to_none=True)
        for i in range(accumulation):
            if i:  # MemTracker takes one forward per root module until its module stats are cleared
                tracker.reset_mod_stats()
            with autocast():
                loss = first_float(model(*args, **kwargs)).float().mean()
            if accumulation > 1:
                loss = loss / accumulation
            loss.backward()
            del loss
        opt.step()

    tracker = MemTracker()
    # made before the tracker: parameters, buffers (BatchNorm statistics, the frozen u/v now
    # among them) and the inputs; the optimizer state is created inside, in the first step
    tracker.track_external(model, opt, *args, *kwargs.values())
    with tracker:
        step()
        # MemTracker refuses a root module's second forward ("multiple iterative calls")
        # until the per-module stats of the first are cleared; the peak is kept across
        tracker.reset_mod_stats()
        step()
    peak = sum(dev["Total"] for dev in tracker.get_tracker_snapshot("peak").values())
    return peak, frozen


class SdpaBlock(nn.Module):
    """A projection and one scaled_dot_product_attention call over 2 heads of 8 (16 features)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(16, 16)

    def forward(self, x):
        q = self.proj(x).view(x.shape[0], x.shape[1], 2, 8).transpose(1, 2)
        return torch.nn.functional.scaled_dot_product_attention(q, q, q).transpose(1, 2).reshape(x.shape)
