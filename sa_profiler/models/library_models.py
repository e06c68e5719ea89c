"""Library models by name, without a file: `timm:NAME`, `torchvision:NAME`,
`transformers:MODEL_TYPE`, `diffusers:CLASS`, or a local folder with a `config.json`.

Each gives a zero-argument factory (the model with random weights: no weight is downloaded or
read) and the inputs a step of it takes by default, which `--input` replaces:

- timm: an image of the model's pretrained input size (`pretrained_cfg["input_size"]`);
- torchvision: an image of its default weights' crop size (3x224x224 where it has none);
- transformers: `input_ids` of 128 tokens (the model's longest where shorter) and an all-ones
  `attention_mask` for a text model; `pixel_values` of the configured image size for a vision
  model. `--arg KEY=VALUE` overrides the default configuration (`AutoConfig.for_model`);
- diffusers: the arguments of the model class's `forward`, each sized from the configuration
  (`--arg` values are configuration arguments): `sample` (a UNet) or `hidden_states` (a
  transformer) of the configured channels and size; `timestep`, one for the batch for a UNet
  (`scalar`, as the UNets broadcast it) and one per sample for a transformer (whose timestep
  embedding takes one per sample); `encoder_hidden_states`, 77 tokens of the text width the
  configuration gives (`encoder_hid_dim`, `caption_channels`, `joint_attention_dim` or
  `cross_attention_dim`); `pooled_projections` of `pooled_projection_dim`; `class_labels`
  (zeros) where the configuration embeds classes (`num_class_embeds`, or `ada_norm_zero` with
  `num_embeds_ada_norm`, as DiT). An optional argument the configuration does not size is left
  out; a required one is a one-line error naming it, asking for `--input NAME=SHAPE[:DTYPE]`
  (raised when `default_inputs` is read, so that given `--input`s need no default).

The libraries stay optional: a missing one is a one-line error naming the install command.
"""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path
from typing import Callable

LIBRARIES = ("timm", "torchvision", "transformers", "diffusers")
TEXT_TOKENS = 128
CONDITION_TOKENS = 77
DEFAULT_SAMPLE = 64  # Stable Diffusion's 512 px images as latents


class LibraryError(ValueError):
    """A library model that cannot be made (one line for the user)."""


def is_library_spec(spec: str) -> bool:
    prefix, sep, _ = spec.partition(":")
    return (sep and prefix in LIBRARIES) or (Path(spec).is_dir() and (Path(spec) / "config.json").is_file())


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        raise LibraryError(f"{name} is not installed; install it with: pip install {name}") from None


class _Factory:
    """A library model's zero-argument factory, named as the user names the model, with its
    default `--input` list. `missing`: required `forward` arguments no default can be made for;
    reading `default_inputs` then raises a one-line `LibraryError` naming the first."""

    def __init__(self, make: Callable, name: str, inputs: list[str], missing: tuple[str, ...] = ()):
        self._make, self.__name__, self._inputs, self._missing = make, name, list(inputs), tuple(missing)

    def __call__(self):
        return self._make()

    def __repr__(self) -> str:
        return f"<factory of {self.__name__}>"

    @property
    def default_inputs(self) -> list[str]:
        if self._missing:
            name = self._missing[0]
            others = "".join(f" --input {i}" for i in self._inputs)
            raise LibraryError(f"{self.__name__} needs its input {name}, which its configuration does not size: give "
                           f"every input as --input NAME=SHAPE[:DTYPE], e.g. --input {name}=SHAPE[:DTYPE]{others}")
        return list(self._inputs)


def _named(factory: Callable, name: str, inputs: list[str], missing: tuple[str, ...] = ()) -> _Factory:
    return _Factory(factory, name, inputs, missing)


def load(spec: str, args: dict | None = None) -> Callable:
    """A factory for a library model (see the module notes); `factory.default_inputs` is its
    default `--input` list (a one-line `LibraryError` naming a required input it cannot size)."""
    args = dict(args or {})
    if Path(spec).is_dir():
        return _folder(Path(spec), args)
    library, _, name = spec.partition(":")
    if not name:
        raise LibraryError(f"cannot read model {spec!r}: expected {library}:NAME")
    return {"timm": _timm, "torchvision": _torchvision, "transformers": _transformers,
            "diffusers": _diffusers}[library](name, args)


def _timm(name: str, args: dict) -> Callable:
    timm = _import("timm")
    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:5]
        raise LibraryError(f"timm has no model {name!r}" + (f"; close: {', '.join(close)}" if close else
                                                            "; `timm.list_models()` lists them"))
    cfg = timm.get_pretrained_cfg(name)
    size = tuple(getattr(cfg, "input_size", None) or (3, 224, 224)) if cfg is not None else (3, 224, 224)
    if isinstance(args.get("img_size"), int):
        size = (args.get("in_chans", size[0]), args["img_size"], args["img_size"])
    return _named(lambda: timm.create_model(name, pretrained=False, **args), f"timm:{name}",
                  ["x".join(map(str, size))])


def _torchvision(name: str, args: dict) -> Callable:
    models = _import("torchvision.models")
    try:
        builder = models.get_model_builder(name)
    except ValueError:
        raise LibraryError(f"torchvision has no model {name!r}; `torchvision.models.list_models()` lists them") from None
    side = 224
    try:
        weights = models.get_model_weights(name)
        side = int(weights.DEFAULT.transforms().crop_size[0])
    except Exception:  # a model without weights or transforms: the common ImageNet size
        pass
    return _named(lambda: builder(weights=None, **args), f"torchvision:{name}", [f"3x{side}x{side}"])


def _transformers(model_type: str, args: dict, config=None) -> Callable:
    transformers = _import("transformers")
    attn = args.pop("attn_implementation", None)
    if config is None:
        try:
            config = transformers.AutoConfig.for_model(model_type, **args)
        except ValueError:
            raise LibraryError(f"transformers has no model type {model_type!r} (a config.json's model_type, "
                               f"e.g. bert, gpt2, vit, llama)") from None
    if attn:
        config._attn_implementation = attn
    try:
        cls = transformers.AutoModel._model_mapping[type(config)]
    except KeyError:
        raise LibraryError(f"transformers has no base model for {model_type!r}") from None
    if cls.main_input_name == "pixel_values":
        size = getattr(config, "image_size", 224)
        size = size if isinstance(size, int) else size[0]
        inputs = [f"pixel_values={getattr(config, 'num_channels', 3)}x{size}x{size}"]
    else:
        tokens = min(TEXT_TOKENS, getattr(config, "max_position_embeddings", TEXT_TOKENS) or TEXT_TOKENS)
        vocab = getattr(config, "vocab_size", None)
        ids = f"input_ids={tokens}:int64" + (f":range=0..{vocab}" if vocab else "")
        inputs = [ids, f"attention_mask={tokens}:int64"]
    return _named(lambda: cls._from_config(config), f"transformers:{model_type}", inputs)


def _diffusers(name: str, args: dict, config: dict | None = None) -> Callable:
    diffusers = _import("diffusers")
    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_config"):
        raise LibraryError(f"diffusers has no model class {name!r} (e.g. UNet2DModel, UNet2DConditionModel)")
    config = {**(config or {}), **args}
    try:
        made = cls.extract_init_dict(config)[0] if config else {}
    except Exception:
        made = config
    full = {**_defaults(cls), **made}
    inputs, missing = _diffusers_inputs(cls, full)
    return _named(lambda: cls.from_config(config), f"diffusers:{name}", inputs, missing)


def _diffusers_inputs(cls, full: dict) -> tuple[list[str], tuple[str, ...]]:
    """The default inputs of a diffusers model (see the module notes), by the arguments its
    class's `forward` takes, and the required ones none can be made for."""
    try:
        params = list(inspect.signature(cls.forward).parameters.values())[1:]  # without self
    except (TypeError, ValueError):
        return [], ()
    names = {p.name for p in params}
    inputs, missing = [], []
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        value = _diffusers_input(p.name, full, unet="sample" in names)
        if value:
            inputs.append(f"{p.name}={value}")
        elif p.default is inspect.Parameter.empty:
            missing.append(p.name)
    return inputs, tuple(missing)


def _first(value):
    """A per-block configuration value (a list or tuple in some UNets): the first block's."""
    return value[0] if isinstance(value, (list, tuple)) and value else value


def _diffusers_input(name: str, full: dict, unet: bool) -> str:
    """One `forward` argument as `--input` writes it ("" where the configuration does not size it)."""
    if name in ("sample", "hidden_states"):
        if not isinstance(full.get("in_channels"), int) or "sample_size" not in full:
            return ""  # e.g. a model on packed tokens (Flux) or on discrete latents: no image to guess
        size = full["sample_size"] or DEFAULT_SAMPLE  # None in a conditional UNet's defaults
        height, width = (size, size) if isinstance(size, int) else tuple(size)[:2]
        return f"{full['in_channels']}x{height}x{width}"
    if name == "timestep":
        return "scalar:int64" if unet else "B:int64"
    if name == "encoder_hidden_states":
        width = next((_first(full[k]) for k in ("encoder_hid_dim", "caption_channels", "joint_attention_dim",
                                                  "cross_attention_dim") if full.get(k)), None)
        return f"{CONDITION_TOKENS}x{width}" if isinstance(width, int) else ""
    if name == "pooled_projections":
        width = full.get("pooled_projection_dim")
        return str(width) if isinstance(width, int) and width else ""
    if name == "class_labels":
        embeds_classes = full.get("num_class_embeds") or (full.get("norm_type") == "ada_norm_zero"
                                                          and full.get("num_embeds_ada_norm"))
        return "B:int64" if embeds_classes or full.get("class_embed_type") == "timestep" else ""
    return ""


def _defaults(cls) -> dict:
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _folder(folder: Path, args: dict) -> Callable:
    """A model folder: transformers (`model_type`), diffusers (`_class_name`) or timm
    (`architecture`) by what its `config.json` holds; its weights are never read."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise LibraryError(f"cannot read {folder / 'config.json'}: {err}") from None
    if "_class_name" in config:
        return _diffusers(config["_class_name"], args, config)
    if "model_type" in config:
        transformers = _import("transformers")
        return _transformers(config["model_type"], args,
                             transformers.AutoConfig.from_pretrained(str(folder), **args))
    if "architecture" in config:
        return _timm(config["architecture"], {**config.get("model_args", {}), **args})
    raise LibraryError(f"{folder / 'config.json'} names no model (model_type, _class_name or architecture)")
