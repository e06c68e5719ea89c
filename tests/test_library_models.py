"""Models as the libraries write them, named as a user names them (`timm:NAME`,
`transformers:MODEL_TYPE`, `diffusers:CLASS`, a folder with a config.json), with masks whose
values the model reads: the simulated CPU step equals the real one to the byte and is within 1 %
of PyTorch's MemTracker around the same real step, and a T4 step with fp16 AMP answers."""

from __future__ import annotations

import functools
import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from sa_profiler.cli import cli
from sa_profiler.models.fit import FitError, fit, load, run_step
from zoo_cases import BERT, GPT2, PADDED, memtracker_peak

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # the real libraries (timm, transformers, diffusers, torchvision)

LLAMA = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "vocab_size": 1000, "max_position_embeddings": 64}
UNET = {"sample_size": 16, "block_out_channels": [32, 64], "cross_attention_dim": 32, "layers_per_block": 1,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "norm_num_groups": 8, "attention_head_dim": 8}
SWIN = {"img_size": 56, "embed_dim": 24, "depths": (1, 1), "num_heads": (1, 2), "window_size": 7}
VIT = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 2}

# model, its arguments, inputs (None: its default), batch, the library, attention layers
CASES = {
    "bert-padded": ("transformers:bert", BERT, PADDED, 4, "transformers", 2),
    "gpt2-padded": ("transformers:gpt2", GPT2, PADDED, 4, "transformers", 2),
    "llama-padded": ("transformers:llama", LLAMA, PADDED, 4, "transformers", 2),
    "swin": ("timm:swin_tiny_patch4_window7_224", SWIN, ("3x56x56",), 2, "timm", 2),
    "vit": ("timm:vit_tiny_patch16_224", VIT, ("3x32x32",), 4, "timm", 2),
    "unet-cross": ("diffusers:UNet2DConditionModel", UNET, None, 2, "diffusers", 8),  # self + cross x 4
}


def _case(key):
    spec, args, inputs, batch, library, layers = CASES[key]
    pytest.importorskip(library)
    factory = load(spec, dict(args))
    return factory, list(inputs or factory.default_inputs), batch, layers


@functools.lru_cache(maxsize=None)
def _simulated(key):
    factory, inputs, batch, _ = _case(key)
    return run_step(factory, inputs, batch, None)




@pytest.mark.parametrize("key", list(CASES))
def test_simulated_cpu_step_equals_the_real_one(key):
    factory, inputs, batch, layers = _case(key)
    sim = _simulated(key)
    real = run_step(factory, inputs, batch, None, device="cpu")
    assert sim.status == real.status == "ok", (sim.message, real.message)
    assert sim.peak_total == real.peak_total and sim.breakdown == real.breakdown
    assert sim.backends == real.backends
    assert sim.attention_calls == real.attention_calls
    assert sim.attention_layers == layers or key == "swin"  # swin's hand-written attention: test_explicit_attention


def _without_pooler(factory):
    def made():
        model = factory()
        model.pooler = None  # BertModel.forward: no pooled output
        return model
    return made


@pytest.mark.parametrize("key", list(CASES))
def test_within_one_percent_of_pytorch_memtracker(key):
    """BERT without its pooler: MemTracker's module hooks keep an output the loss never reads
    alive with its graph (the pooler's, which holds the last hidden state through the backward);
    without them it is freed at once, as the byte-exact real step shows. With no unread output
    the two agree to the byte."""
    pytest.importorskip("torch.distributed._tools.mem_tracker")
    factory, inputs, batch, _ = _case(key)
    sim = _simulated(key)
    if key == "bert-padded":
        factory = _without_pooler(factory)
        sim = run_step(factory, inputs, batch, None)
    peak, _ = memtracker_peak(factory, inputs, batch)
    assert abs(sim.peak_total - peak) <= 0.01 * peak, (sim.peak_total, peak)


@pytest.mark.parametrize("key", list(CASES))
def test_t4_with_fp16_amp_answers(key):
    spec, args, inputs, batch, library, _ = CASES[key]
    pytest.importorskip(library)
    argv = ["fit", spec, "--batch", str(batch), "--gpu", "t4", "--amp", "fp16", "--json"]
    for k, v in args.items():
        argv += ["--arg", f"{k}={list(v) if isinstance(v, tuple) else v}"]
    for item in inputs or ():
        argv += ["--input", item]
    out = CliRunner().invoke(cli, argv, env={"SA_PROFILER_CACHE": "off"})
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["status"] == "ok" and doc["peak_bytes"] > doc["baseline_bytes"]


def test_the_mask_s_values_decide_the_attention_call():
    """transformers drops an all-ones mask before SDPA (masking_utils reads its values): the
    simulation does as the real step does, with the mask and without it."""
    pytest.importorskip("transformers")
    factory = load("transformers:bert", dict(BERT))
    masks = {}
    for values in ("", ":pad=0.25"):
        inputs = ["input_ids=32:int64", f"attention_mask=32:int64{values}"]
        sim = run_step(factory, inputs, 2, None)
        real = run_step(factory, inputs, 2, None, device="cpu")
        assert sim.attention_calls == real.attention_calls
        masks[values] = {str(c["mask"]) for c in sim.attention_calls}
    assert masks[""] == {"None"} and masks[":pad=0.25"] == {"[2, 1, 32, 32]"}


# -- library models by name ------------------------------------------------------------------
def test_default_inputs():
    pytest.importorskip("timm")
    pytest.importorskip("transformers")
    pytest.importorskip("diffusers")
    assert load("timm:vit_tiny_patch16_224").default_inputs == ["3x224x224"]
    assert load("timm:vit_tiny_patch16_224", {"img_size": 64}).default_inputs == ["3x64x64"]
    assert load("transformers:bert").default_inputs == ["input_ids=128:int64:range=0..30522", "attention_mask=128:int64"]
    assert load("transformers:vit").default_inputs == ["pixel_values=3x224x224"]
    assert load("diffusers:UNet2DConditionModel").default_inputs == [
        "sample=4x64x64", "timestep=scalar:int64", "encoder_hidden_states=77x1280"]
    assert load("diffusers:UNet2DModel", {"sample_size": 32}).default_inputs == ["sample=3x32x32", "timestep=scalar:int64"]


def test_a_model_folder_reads_its_config_and_no_weights(tmp_path):
    transformers = pytest.importorskip("transformers")
    transformers.AutoConfig.for_model("gpt2", **GPT2).save_pretrained(tmp_path / "gpt2")
    (tmp_path / "gpt2" / "model.safetensors").write_text("not weights: never read")
    factory = load(str(tmp_path / "gpt2"))
    by_folder = run_step(factory, ["input_ids=32:int64", "attention_mask=32:int64"], 2, None)
    by_name = run_step(load("transformers:gpt2", dict(GPT2)), ["input_ids=32:int64", "attention_mask=32:int64"], 2, None)
    assert by_folder.peak_total == by_name.peak_total
    (tmp_path / "timm").mkdir()
    (tmp_path / "timm" / "config.json").write_text(json.dumps({"architecture": "vit_tiny_patch16_224",
                                                               "model_args": VIT}))
    pytest.importorskip("timm")
    assert load(str(tmp_path / "timm")).default_inputs == ["3x32x32"]


@pytest.mark.parametrize("argv,message", [
    (["fit", "timm:no_such_net_xyz"], "timm has no model 'no_such_net_xyz'"),
    (["fit", "transformers:no_such_type"], "transformers has no model type 'no_such_type'"),
    (["fit", "diffusers:NoSuchModel"], "diffusers has no model class 'NoSuchModel'"),
    (["fit", "timm:"], "expected timm:NAME"),
])
def test_bad_library_names_are_one_line(argv, message):
    pytest.importorskip(argv[1].split(":")[0])
    out = CliRunner().invoke(cli, argv)
    assert out.exit_code == 2 and out.stderr.strip().count("\n") == 0 and message in out.stderr, out.output


def test_a_missing_library_is_one_line(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "timm", None)  # import timm raises ImportError
    out = CliRunner().invoke(cli, ["fit", "timm:vit_tiny_patch16_224"])
    assert out.exit_code == 2 and out.stderr.strip() == "sa-profile: error: timm is not installed; install it with: pip install timm"


# -- values in a simulation ------------------------------------------------------------------
class Branchy(nn.Module):
    """Drops its mask when it masks nothing, as transformers does; packs the kept tokens."""

    def __init__(self, dim=16):
        super().__init__()
        self.proj = nn.Linear(dim, 3 * dim)

    def forward(self, x, mask):
        q, k, v = self.proj(x).unsqueeze(1).chunk(3, dim=-1)
        if mask.all():
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            keep = mask[:, None, None, :].bool()
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        kept = int(mask.sum())  # tokens kept over the batch: a value read through .item()
        return out.squeeze(1).flatten(0, 1)[:kept]


class ReadsActivations(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        h = self.proj(x)
        return h * 2 if (h > 0).any() else h


@pytest.mark.parametrize("mask", ["mask=16:int64", "mask=16:int64:pad=0.5", "mask=16:bool:pad=0.25"])
def test_branches_on_input_values_go_as_on_the_real_step(mask):
    sim = run_step(Branchy, ["16x16", mask], 4, None)
    real = run_step(Branchy, ["16x16", mask], 4, None, device="cpu")
    assert sim.status == real.status == "ok"
    assert sim.peak_total == real.peak_total and sim.attention_calls == real.attention_calls
    assert ({str(c["mask"]) for c in sim.attention_calls} == {"None"}) == (":pad" not in mask)


def test_a_branch_on_activations_is_refused_in_one_line():
    with pytest.raises(FitError, match=r"reads a value of a tensor computed from parameters or activations "
                                       r"\(made by any in the model's own forward\).*--engine measure"):
        run_step(ReadsActivations, ["8"], 2, None)
    out = CliRunner().invoke(cli, ["fit", f"{__file__}:ReadsActivations", "--input", "8", "--gpu", "t4"])
    assert out.exit_code == 2 and "--engine measure" in out.stderr and out.stderr.count("\n") == 1, out.output
    assert fit(ReadsActivations, ["8"], 2, "cpu", engine="measure", conversions=()).step.status == "ok"


def test_values_from_a_file(tmp_path):
    torch.save(torch.tensor([1] * 12 + [0] * 4), tmp_path / "mask.pt")
    (tmp_path / "mask.txt").write_text(" ".join(["1"] * 12 + ["0"] * 4))
    by_pad = run_step(Branchy, ["16x16", "mask=16:int64:pad=0.25"], 4, None)
    for name in ("mask.pt", "mask.txt"):
        by_file = run_step(Branchy, ["16x16", f"mask=16:int64:file={tmp_path / name}"], 4, None)
        assert by_file.peak_total == by_pad.peak_total and by_file.attention_calls == by_pad.attention_calls


# -- attention written out by hand -------------------------------------------------------------
def _timm_fused(enable: bool):
    from timm.layers import config

    before = config._USE_FUSED_ATTN
    config._USE_FUSED_ATTN = 2 if enable else 0
    return before


def test_swin_reports_its_explicit_attention_and_the_fused_step_is_the_fused_model():
    pytest.importorskip("timm")
    from timm.layers import config

    result = fit(load("timm:swin_tiny_patch4_window7_224", dict(SWIN)), ["3x56x56"], 2, "t4", conversions=(),
                 timeline=False)
    assert result.step.attention_layers == 2
    assert set(result.step.explicit_attention) == {"layers.0.blocks.0.attn", "layers.1.blocks.0.attn"}
    assert result.step.backends == {} and result.fused.backends == {"efficient": 2}
    before = _timm_fused(True)
    try:  # the same model built with timm's fused path
        built_fused = fit(load("timm:swin_tiny_patch4_window7_224", dict(SWIN)), ["3x56x56"], 2, "t4",
                          conversions=(), timeline=False)
    finally:
        config._USE_FUSED_ATTN = before
    assert built_fused.step.explicit_attention == {} and built_fused.fused is None
    assert result.fused.peak_total == built_fused.step.peak_total
    assert "set_fused_attn" in result.to_json()["fused"]["change"][0]


def test_transformers_eager_attention_fused_is_the_sdpa_model():
    pytest.importorskip("transformers")
    eager = fit(load("transformers:bert", dict(BERT, attn_implementation="eager")), list(PADDED), 4, "t4",
                conversions=(), timeline=False)
    sdpa = fit(load("transformers:bert", dict(BERT, attn_implementation="sdpa")), list(PADDED), 4, "t4",
               conversions=(), timeline=False)
    assert len(eager.step.explicit_attention) == 2 and eager.step.attention_layers == 2
    assert sdpa.step.explicit_attention == {} and sdpa.fused is None
    assert eager.fused.peak_total == sdpa.step.peak_total and eager.fused.backends == sdpa.step.backends
    assert eager.to_json()["fused"]["change"] == ['attn_implementation="sdpa" in from_pretrained / from_config']


class HandWritten(nn.Module):
    """Research-code attention: scale, a bias, masked_fill, softmax, dropout, then the values."""

    def __init__(self, dim=16, heads=2):
        super().__init__()
        self.heads, self.qkv, self.bias = heads, nn.Linear(dim, 3 * dim), nn.Parameter(torch.zeros(heads, 8, 8))

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = torch.einsum("bhqd,bhkd->bhqk", q, k) / (d // self.heads) ** 0.5 + self.bias
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
        probs = F.dropout(scores.softmax(dim=-1), 0.1, self.training)
        return (probs @ v).transpose(1, 2).reshape(b, n, d)


class TwoBlocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([HandWritten(), HandWritten()])
        self.mlp = nn.Sequential(nn.Linear(16, 16), nn.Softmax(dim=-1))  # a softmax that is not attention

    def forward(self, x):
        for block in self.blocks:
            x = x + block(x)
        return self.mlp(x) @ x.new_ones(16, 4)


def test_hand_written_attention_is_found_without_a_library_switch():
    result = fit(TwoBlocks, ["8x16"], 2, "t4", conversions=(), timeline=False)
    assert set(result.step.explicit_attention) == {"blocks.0", "blocks.1"}
    assert result.step.explicit_attention["blocks.0"] == [2, 2, 8, 8]
    assert result.step.attention_layers == 2 and result.fused is None
    assert "no library switch" in result.fused_note and "blocks.0" in result.fused_note
    real = run_step(TwoBlocks, ["8x16"], 2, None, device="cpu")
    assert real.explicit_attention == run_step(TwoBlocks, ["8x16"], 2, None).explicit_attention


def test_sagan_layers_are_explicit_attention_with_convert_as_their_alternative():
    result = fit(load("examples/sagan.py:Generator", {"ch": 8, "image_size": 32}), ["128"], 2, "t4", timeline=False)
    assert set(result.step.explicit_attention) == set(result.step.sagan_modules) and result.step.sagan_modules
    assert result.fused is None and not result.fused_note and "sdpa" in result.conversions


def _torchvision():
    """torchvision where it imports cleanly: its wheels match the index's own torch builds only."""
    try:
        import torchvision.models  # noqa: F401
    except Exception as err:  # ImportError, or a build for another torch (missing operators)
        pytest.skip(f"torchvision does not import with this torch: {type(err).__name__}")


def test_torchvision_models_by_name():
    _torchvision()
    assert load("torchvision:resnet18").default_inputs == ["3x224x224"]
    assert load("torchvision:inception_v3").default_inputs == ["3x299x299"]
    factory = load("torchvision:resnet18", {"num_classes": 10})
    sim = run_step(factory, ["3x32x32"], 2, None)
    real = run_step(factory, ["3x32x32"], 2, None, device="cpu")
    assert sim.status == real.status == "ok" and sim.peak_total == real.peak_total
    out = CliRunner().invoke(cli, ["fit", "torchvision:no_such_net"])
    assert out.exit_code == 2 and "torchvision has no model 'no_such_net'" in out.stderr
