"""The fused alternative to attention written out by hand, by each library's own switch.

Where a model computes attention explicitly (`explicit.py` finds it), the library it comes
from usually has a switch that sends the same layers through `scaled_dot_product_attention`.
`switch(model)` flips it on a built model, so that `fit` can simulate the same step fused, and
says the line a user changes:

- timm: every module's `fused_attn` flag (Swin's default is the explicit path; the global
  switch is `timm.layers.set_fused_attn(True, experimental=True)` or `TIMM_FUSED_ATTN=2`);
- transformers: the config's attention implementation (`attn_implementation="sdpa"`), only for
  a model class transformers gives an SDPA path (`_supports_sdpa`) and, in transformers 5,
  lets switch on a built model (`_can_set_attn_implementation`): others (Swinv2, DeBERTa, ...)
  refuse `attn_implementation="sdpa"`, so no switch is offered there;
- diffusers: the attention processors (`set_attn_processor`, each explicit processor for its
  SDPA twin: `AttnProcessor2_0`, `AttnAddedKVProcessor2_0`).

A switch is offered only where it took: the setting reads back as switched on the model.
`unchanged(step, fused_step)` says whether the switched step still is the same step (no SDPA
call more and the same peak), for the caller to offer nothing then either.

SAGAN layers have `convert(model, "sdpa")` (`attention/registry.py`), priced as a conversion.
"""

from __future__ import annotations

from torch import nn

TIMM = "timm.layers.set_fused_attn(True, experimental=True) before timm.create_model (or TIMM_FUSED_ATTN=2)"
TRANSFORMERS = 'attn_implementation="sdpa" in from_pretrained / from_config'
DIFFUSERS = "model.set_attn_processor(AttnProcessor2_0())"
DIFFUSERS_ADDED_KV = "model.set_attn_processor(AttnAddedKVProcessor2_0()) for the added key/value attention"
# diffusers' explicit processors and their SDPA twins
DIFFUSERS_FUSED = {"AttnProcessor": "AttnProcessor2_0", "AttnAddedKVProcessor": "AttnAddedKVProcessor2_0"}


def switch(model: nn.Module) -> list[str]:
    """Route `model`'s explicit attention through SDPA where its library can; the lines to
    change (empty: no library switch applies, or the library refuses it for this model)."""
    lines = []
    timm_flags = [m for m in model.modules() if getattr(m, "fused_attn", None) is False]
    for m in timm_flags:
        m.fused_attn = True
    if timm_flags:
        lines.append(TIMM)
    if _transformers_eager(model) and _transformers_to_sdpa(model):
        lines.append(TRANSFORMERS)
    lines += _diffusers_to_sdpa(model)
    return lines


def unchanged(step, fused_step) -> str:
    """Why `fused_step` (the step run after `switch`) is no fused step of `step`: it made no
    scaled_dot_product_attention call more than `step` and has the same peak, so the switch
    changed nothing ("" where it did change the step)."""
    def calls(s) -> int:
        return sum((getattr(s, "backends", None) or {}).values())

    if fused_step.status == step.status and calls(fused_step) <= calls(step) and \
            fused_step.peak_total == step.peak_total:
        return "the library's switch left the step as it was (no scaled_dot_product_attention call, the same peak)"
    return ""


def _transformers_eager(model) -> bool:
    config = getattr(model, "config", None)
    return type(model).__module__.startswith("transformers.") and \
        getattr(config, "_attn_implementation", None) == "eager"


def _sdpa_accepted(model) -> bool:
    """Whether transformers gives this model class an SDPA path it can switch to on a built
    model (transformers raises or warns and keeps eager attention otherwise)."""
    if getattr(model, "_supports_sdpa", False) is not True:
        return False
    can_set = getattr(type(model), "_can_set_attn_implementation", None)
    try:
        return bool(can_set()) if callable(can_set) else True
    except Exception:  # a heuristic over the model's source: unreadable source, no switch
        return False


def _transformers_to_sdpa(model) -> bool:
    """Switch a transformers model's eager attention to SDPA where transformers accepts it; True
    where some eager attention configuration now reads sdpa."""
    configs = [m.config for m in model.modules()
               if getattr(getattr(m, "config", None), "_attn_implementation", None) == "eager"]
    if not _sdpa_accepted(model):
        return False
    if hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation("sdpa")
        except (ValueError, ImportError, NotImplementedError):  # transformers refuses it for this model
            return False
    else:  # older transformers: the config decides at each call
        for config in configs:
            config._attn_implementation = "sdpa"
    return any(getattr(config, "_attn_implementation", None) == "sdpa" for config in configs)


def _diffusers_to_sdpa(model) -> list[str]:
    """Each explicit diffusers attention processor swapped for its SDPA twin; the lines to
    change (empty where the model has none)."""
    processors = getattr(model, "attn_processors", None)
    if not isinstance(processors, dict) or not type(model).__module__.startswith("diffusers."):
        return []
    explicit = {type(p).__name__ for p in processors.values()} & set(DIFFUSERS_FUSED)
    if not explicit:
        return []
    from diffusers.models import attention_processor

    twins = {name: getattr(attention_processor, DIFFUSERS_FUSED[name], None) for name in explicit}
    if None in twins.values():  # an older diffusers without the twin: no switch to offer
        return []
    model.set_attn_processor({key: twins[type(p).__name__]() if type(p).__name__ in twins else p
                              for key, p in processors.items()})
    return [line for name, line in (("AttnProcessor", DIFFUSERS), ("AttnAddedKVProcessor", DIFFUSERS_ADDED_KV))
            if name in explicit]
