"""A model's inputs for one step: shapes per sample, dtypes, positional or by name.

On the command line each `--input` is `[NAME=]SHAPE[:DTYPE]`:

- `3x224x224`: an image per sample (the batch is put in front), float32 unless a dtype is given;
- `128`: a vector per sample (a latent, or 128 token ids with `:int64`);
- `B`: one value per sample, shape (batch,) (a per-sample timestep);
- `scalar`: one 0-dim value for the whole batch (a diffusion timestep as diffusers takes it).

DTYPE is float32 (default), float16, bfloat16, float64, int64, int32 or bool (also fp32, fp16,
bf16, long, int). Inputs without a name are passed positionally in order, named ones as
keyword arguments. Float inputs are random normal, integer ones zero (a valid token id or
class label for every vocabulary), boolean ones True (a mask that masks nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float64": torch.float64, "fp64": torch.float64, "double": torch.float64,
    "int64": torch.int64, "long": torch.int64, "int32": torch.int32, "int": torch.int32,
    "bool": torch.bool,
}
FORM = ("expected [NAME=]SHAPE[:DTYPE], e.g. 3x224x224, 128:int64, timestep=scalar:int64 or t=B:int64 "
        "(DTYPE one of float32, float16, bfloat16, float64, int64, int32, bool)")


class InputError(ValueError):
    """An input that cannot be read (one line for the user)."""


@dataclass(frozen=True)
class Input:
    """One input of the model. `shape` is per sample; `batched=False` for one tensor per batch."""

    shape: tuple[int, ...] = ()
    dtype: torch.dtype = torch.float32
    name: str | None = None
    batched: bool = True

    def full_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, *self.shape) if self.batched else tuple(self.shape)

    def make(self, batch: int, device: str | torch.device) -> torch.Tensor:
        shape = self.full_shape(batch)
        if str(device) == "meta":
            return torch.empty(shape, dtype=self.dtype, device=device)
        if self.dtype.is_floating_point:
            return torch.randn(shape, dtype=self.dtype, device=device)
        if self.dtype == torch.bool:
            return torch.ones(shape, dtype=torch.bool, device=device)
        return torch.zeros(shape, dtype=self.dtype, device=device)

    @property
    def label(self) -> str:
        shape = "x".join(map(str, self.shape)) if self.batched and self.shape else ("B" if self.batched else "scalar")
        dtype = "" if self.dtype == torch.float32 else ":" + str(self.dtype).replace("torch.", "")
        return (f"{self.name}=" if self.name else "") + shape + dtype


def parse(text) -> Input:
    """One `--input` (see the module notes); an int or a tuple is a float input of that shape."""
    if isinstance(text, Input):
        return text
    if isinstance(text, int):
        text = str(text)
    if isinstance(text, (tuple, list)):
        dims = tuple(int(d) for d in text)
        if not dims or any(d < 1 for d in dims):
            raise InputError(f"cannot read input {tuple(text)!r}: {FORM}")
        return Input(dims)
    raw = str(text).strip()
    name, sep, rest = raw.partition("=")
    if not sep:
        name, rest = None, raw
    elif not name.isidentifier():
        raise InputError(f"cannot read --input {raw!r}: {name!r} is not an argument name; {FORM}")
    shape_text, _, dtype_text = rest.partition(":")
    dtype = torch.float32
    if dtype_text:
        dtype = DTYPES.get(dtype_text.strip().lower())
        if dtype is None:
            raise InputError(f"cannot read --input {raw!r}: unknown dtype {dtype_text!r}; {FORM}")
    shape_text = shape_text.strip().lower()
    if shape_text == "scalar":
        return Input((), dtype, name, batched=False)
    if shape_text == "b":
        return Input((), dtype, name)
    try:
        dims = tuple(int(p) for p in shape_text.replace(",", "x").split("x"))
    except ValueError:
        raise InputError(f"cannot read --input {raw!r}: {FORM}") from None
    if not dims or any(d < 1 for d in dims):
        raise InputError(f"cannot read --input {raw!r}: {FORM}")
    return Input(dims, dtype, name)


def parse_all(spec) -> tuple[Input, ...]:
    """Inputs from one spec (a string, an int, a shape tuple, an Input), a list of specs, or a
    dict of name -> spec (keyword inputs)."""
    if isinstance(spec, dict):
        out = []
        for name, item in spec.items():
            one = parse(item)
            out.append(Input(one.shape, one.dtype, name, one.batched))
        return tuple(out)
    if isinstance(spec, (str, int, Input)):
        return (parse(spec),)
    if isinstance(spec, (tuple, list)) and spec and all(isinstance(d, int) for d in spec):
        return (parse(tuple(spec)),)  # one shape given as a tuple of ints
    if isinstance(spec, (tuple, list)) and spec:
        items = tuple(parse(s) for s in spec)
        names = [i.name for i in items if i.name]
        if len(names) != len(set(names)):
            raise InputError(f"an input name is given twice: {', '.join(names)}")
        seen_named = False
        for i in items:
            if i.name:
                seen_named = True
            elif seen_named:
                raise InputError(f"positional input {i.label!r} after a named one; put positional inputs first")
        return items
    raise InputError(f"cannot read inputs {spec!r}: {FORM}")


def make(inputs: tuple[Input, ...], batch: int, device) -> tuple[list, dict]:
    """Positional and keyword tensors for one call of the model."""
    args = [i.make(batch, device) for i in inputs if not i.name]
    kwargs = {i.name: i.make(batch, device) for i in inputs if i.name}
    return args, kwargs


def describe(inputs: tuple[Input, ...]) -> str:
    return ", ".join(i.label for i in inputs)
