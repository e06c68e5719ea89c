"""Loading a model for `fit`: a file, a module, a library model by name, a class, a factory or
an instance, as a zero-argument factory; its inputs; the one-line error every bad model or
input gets (`FitError`)."""

from __future__ import annotations

import copy
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from sa_profiler.models import inputs as model_inputs
from sa_profiler.models import library_models


class FitError(ValueError):
    """A model, input or option that cannot be used (one line for the user)."""


def load(spec: str, args: dict | None = None) -> Callable[[], nn.Module]:
    """`FILE.py:NAME`, `module:NAME` or a library model (`timm:NAME`, `torchvision:NAME`,
    `transformers:MODEL_TYPE`, `diffusers:CLASS`, a folder with a config.json: see
    `library_models.py`) -> a zero-argument factory of the model.

    A file is imported as `python FILE.py` would see it: its folder is importable (so a
    `from spectral import SpectralNorm` beside it works); a file inside a package (folders
    with `__init__.py`) is imported as that package's module, so relative imports work too."""
    if library_models.is_library_spec(spec):
        try:
            return library_models.load(spec, args)
        except library_models.LibraryError as err:
            raise FitError(str(err)) from None
    if ":" not in spec:
        raise FitError(f"cannot read model {spec!r}: expected FILE.py:NAME, module:NAME, timm:NAME, torchvision:NAME, "
                       f"transformers:MODEL_TYPE, diffusers:CLASS or a folder with a config.json")
    where, name = spec.rsplit(":", 1)
    if where.endswith(".py"):
        module = _import_file(Path(where), spec)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as err:
            raise FitError(f"no module {where!r} (from model {spec!r}): {_one_line(err)}") from None
        except Exception as err:
            raise FitError(f"importing {where!r} failed: {type(err).__name__}: {_one_line(err)}") from None
    obj = getattr(module, name, None)
    if obj is None:
        raise FitError(f"{where!r} has no {name!r}; expected an nn.Module class or a factory function")
    if not callable(obj):
        raise FitError(f"{spec!r} is not callable; expected an nn.Module class or a factory function")
    factory = lambda: obj(**(args or {}))  # noqa: E731
    factory.__name__ = name
    return factory


def _import_file(path: Path, spec: str):
    if not path.is_file():
        raise FitError(f"no such file: {str(path)!r} (from model {spec!r})")
    path = path.resolve()
    root, parts = path.parent, [path.stem]
    while (root / "__init__.py").is_file() and root.parent != root:
        parts.insert(0, root.name)
        root = root.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    mod_name = ".".join(parts)
    try:
        existing = sys.modules.get(mod_name)
        if existing is not None and Path(getattr(existing, "__file__", "") or "").resolve() == path:
            return existing
        if existing is None and len(parts) > 1:
            return importlib.import_module(mod_name)
        # a top-level file: its own module name when free (what `import stem` beside it gives)
        if existing is not None:
            mod_name = f"sa_profiler_user_{abs(hash(str(path)))}"
        loader = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(loader)
        sys.modules[mod_name] = module
        try:
            loader.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(mod_name, None)
            raise
        return module
    except FitError:
        raise
    except Exception as err:
        raise FitError(f"importing {str(path.name)!r} failed: {type(err).__name__}: {_one_line(err)}") from None


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def parse_inputs(spec) -> tuple[model_inputs.Input, ...]:
    try:
        return model_inputs.parse_all(spec)
    except model_inputs.InputError as err:
        raise FitError(str(err)) from None


def factory_of(model) -> tuple[Callable[[], nn.Module], str]:
    """A factory for `model`: a FILE.py:NAME / module:NAME string, an nn.Module class or
    factory, or an instance (its architecture and configuration, without its weights: each
    call gives a copy whose parameters and buffers are new meta tensors)."""
    if isinstance(model, str):
        return load(model), model
    if isinstance(model, nn.Module):
        return (lambda: meta_copy(model)), type(model).__name__
    return model, getattr(model, "__name__", type(model).__name__)


def meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` whose parameters and buffers are meta tensors of the same shape,
    dtype and requires_grad; no weight is copied. Other attributes are copied as they are."""
    memo = {}
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in memo:
            continue
        twin = torch.empty_like(t, device="meta")
        if isinstance(t, nn.Parameter):
            twin = nn.Parameter(twin, requires_grad=t.requires_grad)
        memo[id(t)] = twin
    return copy.deepcopy(model, memo)
