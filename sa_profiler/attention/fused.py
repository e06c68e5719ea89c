"""The fused alternative to attention written out by hand, by each library's own switch.

Where a model computes attention explicitly (`explicit.py` finds it), the library it comes
from usually has a switch that sends the same layers through `scaled_dot_product_attention`.
`switch(model)` flips it on a built model, so that `fit` can simulate the same step fused, and
says the line a user changes:

- timm: every module's `fused_attn` flag (Swin's default is the explicit path; the global
  switch is `timm.layers.set_fused_attn(True, experimental=True)` or `TIMM_FUSED_ATTN=2`);
- transformers: the config's attention implementation (`attn_implementation="sdpa"`);
- diffusers: the attention processors (`set_attn_processor(AttnProcessor2_0())`).

SAGAN layers have `convert(model, "sdpa")` (`attention/registry.py`), priced as a conversion.
"""

from __future__ import annotations

from torch import nn

TIMM = "timm.layers.set_fused_attn(True, experimental=True) before timm.create_model (or TIMM_FUSED_ATTN=2)"
TRANSFORMERS = 'attn_implementation="sdpa" in from_pretrained / from_config'
DIFFUSERS = "model.set_attn_processor(AttnProcessor2_0())"


def switch(model: nn.Module) -> list[str]:
    """Route `model`'s explicit attention through SDPA where its library can; the lines to
    change (empty: no library switch applies)."""
    lines = []
    timm_flags = [m for m in model.modules() if getattr(m, "fused_attn", None) is False]
    for m in timm_flags:
        m.fused_attn = True
    if timm_flags:
        lines.append(TIMM)
    if _transformers_eager(model):
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation("sdpa")
        else:  # older transformers: the config decides at each call
            for m in model.modules():
                config = getattr(m, "config", None)
                if config is not None and getattr(config, "_attn_implementation", None) == "eager":
                    config._attn_implementation = "sdpa"
        lines.append(TRANSFORMERS)
    if _diffusers_explicit(model):
        from diffusers.models.attention_processor import AttnProcessor2_0

        model.set_attn_processor(AttnProcessor2_0())
        lines.append(DIFFUSERS)
    return lines


def _transformers_eager(model) -> bool:
    config = getattr(model, "config", None)
    return type(model).__module__.startswith("transformers.") and \
        getattr(config, "_attn_implementation", None) == "eager"


def _diffusers_explicit(model) -> bool:
    processors = getattr(model, "attn_processors", None)
    if not isinstance(processors, dict) or not type(model).__module__.startswith("diffusers."):
        return False
    return any(type(p).__name__ in ("AttnProcessor", "AttnAddedKVProcessor") for p in processors.values())
