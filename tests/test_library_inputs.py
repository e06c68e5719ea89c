"""Library models' default inputs from their `forward`, and the fused-attention switch only where
the library takes it: diffusers' transformers (DiT, PixArt, SD3) by name with no `--input`, a
required input no configuration sizes as a one-line error, and transformers' Swinv2 (no SDPA
path in transformers) offered no `attn_implementation="sdpa"`. Real libraries, tiny configs."""

from __future__ import annotations

import json
import logging

import pytest
from click.testing import CliRunner

from sa_profiler.attention import fused
from sa_profiler.cli import cli
from sa_profiler.models.fit import FitError, StepResult, fit, load
from sa_profiler.models.library_models import LibraryError

pytestmark = [pytest.mark.slow]  # the real libraries (diffusers, transformers)

DIT = {"num_layers": 1, "sample_size": 8, "num_attention_heads": 2, "attention_head_dim": 8, "norm_num_groups": 8,
       "num_embeds_ada_norm": 10}
PIXART = {"num_layers": 1, "sample_size": 8, "num_attention_heads": 2, "attention_head_dim": 8,
          "cross_attention_dim": 16, "caption_channels": 24, "out_channels": 4}
SD3 = {"num_layers": 1, "sample_size": 8, "num_attention_heads": 2, "attention_head_dim": 8, "joint_attention_dim": 24,
       "caption_projection_dim": 16, "pooled_projection_dim": 12, "in_channels": 4, "out_channels": 4,
       "pos_embed_max_size": 8}
SWINV2 = {"image_size": 32, "embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2], "window_size": 4, "patch_size": 4}


def _argv(spec, args, *more):
    argv = ["fit", spec, *more]
    for k, v in args.items():
        argv += ["--arg", f"{k}={v}"]
    return argv


def _invoke(argv):
    return CliRunner().invoke(cli, argv, env={"SA_PROFILER_CACHE": "off"})


# -- diffusers: the inputs its forward takes -----------------------------------------------
def test_diffusers_transformers_default_inputs_are_their_forward_s_arguments():
    pytest.importorskip("diffusers")
    assert load("diffusers:DiTTransformer2DModel", dict(DIT)).default_inputs == [
        "hidden_states=4x8x8", "timestep=B:int64", "class_labels=B:int64"]
    assert load("diffusers:PixArtTransformer2DModel", dict(PIXART)).default_inputs == [
        "hidden_states=4x8x8", "encoder_hidden_states=77x24", "timestep=B:int64"]  # the caption's width
    assert load("diffusers:SD3Transformer2DModel", dict(SD3)).default_inputs == [
        "hidden_states=4x8x8", "encoder_hidden_states=77x24", "pooled_projections=12", "timestep=B:int64"]
    # the UNets as before: `sample`, one timestep for the batch, the text for a conditional one
    assert load("diffusers:UNet2DConditionModel", {"sample_size": 16, "cross_attention_dim": 32}).default_inputs == [
        "sample=4x16x16", "timestep=scalar:int64", "encoder_hidden_states=77x32"]
    assert load("diffusers:UNet2DModel", {"sample_size": (16, 24)}).default_inputs == [
        "sample=3x16x24", "timestep=scalar:int64"]
    assert load("diffusers:UNet2DModel", {"sample_size": 16, "num_class_embeds": 10}).default_inputs == [
        "sample=3x16x16", "timestep=scalar:int64", "class_labels=B:int64"]


@pytest.mark.parametrize("spec, args, layers", [
    ("diffusers:DiTTransformer2DModel", DIT, 1),
    ("diffusers:PixArtTransformer2DModel", PIXART, 2),  # self and cross attention
    ("diffusers:SD3Transformer2DModel", SD3, 1),  # joint attention: one call over image and text
])
def test_a_diffusers_transformer_by_name_needs_no_input(spec, args, layers):
    pytest.importorskip("diffusers")
    out = _invoke(_argv(spec, args, "--json"))
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["status"] == "ok" and doc["peak_bytes"] > doc["baseline_bytes"]
    assert doc["inputs"].startswith("hidden_states=") and doc["attention_layers"] == layers


def test_a_required_input_no_configuration_sizes_is_one_line_naming_it():
    """Flux takes `hidden_states` as packed tokens: no image size in its configuration to guess."""
    pytest.importorskip("diffusers")
    factory = load("diffusers:FluxTransformer2DModel", {"num_layers": 1, "num_single_layers": 1})
    with pytest.raises(LibraryError, match=r"needs its input hidden_states.*--input NAME=SHAPE\[:DTYPE\]"):
        factory.default_inputs  # noqa: B018
    out = _invoke(["fit", "diffusers:FluxTransformer2DModel", "--arg", "num_layers=1", "--arg", "num_single_layers=1"])
    assert out.exit_code == 2, out.output
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "hidden_states" in lines[0] and "--input hidden_states=SHAPE[:DTYPE]" in lines[0]


def test_given_inputs_need_no_default():
    """The same model runs on the inputs given: the defaults are only asked for where none is."""
    pytest.importorskip("diffusers")
    args = {"in_channels": 8, "num_layers": 1, "num_single_layers": 1, "attention_head_dim": 8,
            "num_attention_heads": 2, "joint_attention_dim": 16, "pooled_projection_dim": 12,
            "axes_dims_rope": (2, 2, 4)}
    inputs = ["hidden_states=16x8", "encoder_hidden_states=4x16", "pooled_projections=12", "timestep=B",
              "img_ids=16x3", "txt_ids=4x3"]
    out = _invoke(_argv("diffusers:FluxTransformer2DModel", args, "--json", *(a for i in inputs for a in ("--input", i))))
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["status"] == "ok"


# -- the fused switch only where the library takes it --------------------------------------
def test_swinv2_is_offered_no_sdpa_switch_transformers_refuses():
    transformers = pytest.importorskip("transformers")
    config = transformers.AutoConfig.for_model("swinv2", **SWINV2)
    assert transformers.Swinv2Model._supports_sdpa is False
    result = fit(load("transformers:swinv2", dict(SWINV2)), ["pixel_values=3x32x32"], 1, "t4", conversions=(),
                 timeline=False)
    assert len(result.step.explicit_attention) == 2
    assert result.fused is None
    assert "call torch.nn.functional.scaled_dot_product_attention in encoder.layers.0" in result.fused_note
    assert result.to_json()["fused"] is None
    model = transformers.Swinv2Model(config)
    assert fused.switch(model) == [] and model.config._attn_implementation == "eager"


def test_swinv2_output_offers_no_switch_and_no_empty_parentheses():
    pytest.importorskip("transformers")
    out = _invoke(_argv("transformers:swinv2", SWINV2))
    assert out.exit_code == 0, out.output
    text = " ".join(out.stdout.split())
    assert "()" not in text and 'attn_implementation="sdpa"' not in text
    assert "call torch.nn.functional.scaled_dot_product_attention in" in text
    assert "does not support setting its attention implementation" not in out.output


def test_a_model_with_an_sdpa_path_is_still_switched(caplog):
    transformers = pytest.importorskip("transformers")
    config = transformers.AutoConfig.for_model("bert", hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                               intermediate_size=64, vocab_size=100, max_position_embeddings=16)
    config._attn_implementation = "eager"
    model = transformers.BertModel(config)
    with caplog.at_level(logging.WARNING):
        assert fused.switch(model) == [fused.TRANSFORMERS]
    assert model.config._attn_implementation == "sdpa" and not caplog.records


def test_diffusers_added_key_value_attention_gets_its_own_sdpa_processor():
    """An explicit AttnAddedKVProcessor goes to AttnAddedKVProcessor2_0 (AttnProcessor2_0 has no
    added key/value projections: the step fails with it)."""
    pytest.importorskip("diffusers")
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnAddedKVProcessor

    def made():
        model = UNet2DConditionModel(
            sample_size=8, block_out_channels=(16, 32), layers_per_block=1, cross_attention_dim=16,
            down_block_types=("SimpleCrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "SimpleCrossAttnUpBlock2D"), mid_block_type="UNetMidBlock2DSimpleCrossAttn",
            norm_num_groups=8, attention_head_dim=8)
        model.set_attn_processor(AttnAddedKVProcessor())
        return model

    result = fit(made, ["sample=4x8x8", "timestep=scalar:int64", "encoder_hidden_states=7x16"], 2, "t4",
                 conversions=(), timeline=False)
    assert result.step.explicit_attention and result.step.backends == {}
    assert result.fused is not None and result.fused.status == "ok", result.fused_note
    assert sum(result.fused.backends.values()) == len(result.step.explicit_attention)
    assert result.fused.fused_lines == [fused.DIFFUSERS_ADDED_KV]


def test_a_switch_that_changes_nothing_is_no_fused_step():
    def step(peak, backends, status="ok"):
        return StepResult(peak, 0, status=status, backends=backends)

    assert fused.unchanged(step(100, {}), step(100, {})) != ""
    assert fused.unchanged(step(100, {"math": 1}), step(100, {"math": 1})) != ""
    assert fused.unchanged(step(100, {}), step(90, {})) == ""  # the peak moved
    assert fused.unchanged(step(100, {}), step(100, {"efficient": 2})) == ""  # SDPA calls where there were none
    assert fused.unchanged(step(100, {}), step(None, {}, "oom")) == ""
