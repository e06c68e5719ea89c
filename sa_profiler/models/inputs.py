"""A model's inputs for one step: shapes per sample, dtypes, positional or by name.

On the command line each `--input` is `[NAME=]SHAPE[:DTYPE]`:

- `3x224x224`: an image per sample (the batch is put in front), float32 unless a dtype is given;
- `128`: a vector per sample (a latent, or 128 token ids with `:int64`);
- `B`: one value per sample, shape (batch,) (a per-sample timestep);
- `scalar`: one 0-dim value for the whole batch (a diffusion timestep as diffusers takes it).

DTYPE is float32 (default), float16, bfloat16, float64, int64, int32 or bool (also fp32, fp16,
bf16, long, int). Inputs without a name are passed positionally in order, named ones as
keyword arguments. Float inputs are random normal, integer ones zero (a valid token id or
class label for every vocabulary) or one where the name says mask (a mask that masks nothing),
boolean ones True.

An input can also say what it holds, after its dtype (`[NAME=]SHAPE[:DTYPE][:VALUES]`):

- `ones`, `zeros`: every value;
- `pad=F`: ones with the last fraction F of each row zero (a padded attention mask);
- `range=LO..HI`: random integers from LO up to HI - 1 (token ids of a vocabulary);
- `file=PATH`: the values in a `.pt` tensor, a `.npy` array or a text file of numbers (one row
  per line), the whole batch or one sample for every sample.

Integer and boolean inputs, and inputs given values, have their values in a simulation too:
what the model computes from them alone is computed for real (`engine/values.py`), so a branch
on a mask's values goes as it would on the card.
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
FORM = ("expected [NAME=]SHAPE[:DTYPE][:VALUES], e.g. 3x224x224, 128:int64, timestep=scalar:int64, t=B:int64 or "
        "attention_mask=128:int64:pad=0.25 (DTYPE one of float32, float16, bfloat16, float64, int64, int32, bool; "
        "VALUES one of ones, zeros, pad=F, range=LO..HI, file=PATH)")


class InputError(ValueError):
    """An input that cannot be read (one line for the user)."""


@dataclass(frozen=True)
class Input:
    """One input of the model. `shape` is per sample; `batched=False` for one tensor per batch."""

    shape: tuple[int, ...] = ()
    dtype: torch.dtype = torch.float32
    name: str | None = None
    batched: bool = True
    values: str = ""  # what it holds (see the module notes); "" for the default

    def full_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, *self.shape) if self.batched else tuple(self.shape)

    @property
    def has_values(self) -> bool:
        """Whether a simulation carries its values: integers, booleans and given values."""
        return bool(self.values) or not self.dtype.is_floating_point

    def make(self, batch: int, device: str | torch.device) -> torch.Tensor:
        shape = self.full_shape(batch)
        if str(device) == "meta":
            return torch.empty(shape, dtype=self.dtype, device=device)
        if self.has_values:
            return self.value(batch).to(device)
        return torch.randn(shape, dtype=self.dtype, device=device)

    def value(self, batch: int) -> torch.Tensor:
        """Its values at `batch`, on the CPU (random normal floats where none were given)."""
        shape = self.full_shape(batch)
        kind, _, arg = self.values.partition("=")
        if not kind:
            kind = "normal" if self.dtype.is_floating_point else (
                "ones" if self.dtype == torch.bool or "mask" in (self.name or "") else "zeros")
        if kind == "normal":
            return torch.randn(shape, dtype=self.dtype)
        if kind in ("ones", "zeros"):
            return (torch.ones if kind == "ones" else torch.zeros)(shape, dtype=self.dtype)
        if kind == "pad":
            out = torch.ones(shape, dtype=self.dtype)
            if shape:
                padded = round(float(arg) * shape[-1])
                if padded:
                    out[..., shape[-1] - padded:] = 0
            return out
        if kind == "range":
            lo, hi = (int(v) for v in arg.split(".."))
            return torch.randint(lo, hi, shape, generator=torch.Generator().manual_seed(0)).to(self.dtype)
        return _from_file(arg, shape, self.dtype, self.label)

    @property
    def label(self) -> str:
        shape = "x".join(map(str, self.shape)) if self.batched and self.shape else ("B" if self.batched else "scalar")
        dtype = "" if self.dtype == torch.float32 else ":" + str(self.dtype).replace("torch.", "")
        return (f"{self.name}=" if self.name else "") + shape + dtype + (f":{self.values}" if self.values else "")


def _from_file(path: str, shape: tuple[int, ...], dtype: torch.dtype, label: str) -> torch.Tensor:
    """Values from a file: the whole batch, or one sample repeated over the batch."""
    import numpy as np

    try:
        if path.endswith(".pt"):
            data = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(data, torch.Tensor):
                raise InputError(f"{path} holds a {type(data).__name__}, not a tensor")
        elif path.endswith(".npy"):
            data = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            data = torch.from_numpy(np.atleast_1d(np.loadtxt(path, delimiter="," if path.endswith(".csv") else None,
                                                             ndmin=2 if len(shape) > 1 else 1)))
    except InputError:
        raise
    except Exception as err:
        raise InputError(f"cannot read the values of --input {label!r} from {path}: {type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''}") from None
    data = data.to(dtype)
    if tuple(data.shape) == shape:
        return data.clone()
    if shape and tuple(data.shape) in (shape[1:], (1, *shape[1:])):
        return data.reshape(shape[1:]).expand(shape).clone()
    want = "x".join(map(str, shape[1:])) or "one value"
    raise InputError(f"{path} holds values of shape {'x'.join(map(str, data.shape)) or 'scalar'}; --input {label!r} "
                     f"needs {want} per sample or the whole batch")


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
    if not sep or ":" in name:
        name, rest = None, raw
    elif not name.isidentifier():
        raise InputError(f"cannot read --input {raw!r}: {name!r} is not an argument name; {FORM}")
    shape_text, _, tail = rest.partition(":")
    dtype, values = torch.float32, ""
    parts = tail.split(":") if tail else []
    if parts and "=" not in parts[0] and parts[0].strip().lower() not in VALUE_KINDS:
        dtype = DTYPES.get(parts[0].strip().lower())
        if dtype is None:
            raise InputError(f"cannot read --input {raw!r}: unknown dtype {parts[0]!r}; {FORM}")
        parts = parts[1:]
    if parts:
        values = _values(":".join(parts).strip(), raw)
    shape_text = shape_text.strip().lower()
    if shape_text == "scalar":
        return Input((), dtype, name, batched=False, values=values)
    if shape_text == "b":
        return Input((), dtype, name, values=values)
    try:
        dims = tuple(int(p) for p in shape_text.replace(",", "x").split("x"))
    except ValueError:
        raise InputError(f"cannot read --input {raw!r}: {FORM}") from None
    if not dims or any(d < 1 for d in dims):
        raise InputError(f"cannot read --input {raw!r}: {FORM}")
    return Input(dims, dtype, name, values=values)


VALUE_KINDS = ("ones", "zeros", "pad", "range", "file")


def _values(text: str, raw: str) -> str:
    """A checked VALUES part, as written."""
    kind, sep, arg = text.partition("=")
    kind = kind.strip().lower()
    bad = f"cannot read the values {text!r} of --input {raw!r}: "
    if kind not in VALUE_KINDS:
        raise InputError(bad + f"expected ones, zeros, pad=F, range=LO..HI or file=PATH")
    if kind in ("ones", "zeros"):
        if sep:
            raise InputError(bad + f"{kind} takes no value")
        return kind
    if kind == "pad":
        try:
            fraction = float(arg)
        except ValueError:
            fraction = -1.0
        if not 0 <= fraction < 1:
            raise InputError(bad + "pad=F takes the padded fraction of each row, from 0 up to but not 1 (pad=0.25)")
        return f"pad={arg.strip()}"
    if kind == "range":
        lo, dots, hi = arg.partition("..")
        try:
            lo_i, hi_i = int(lo), int(hi)
        except ValueError:
            lo_i = hi_i = 0
        if not dots or hi_i <= lo_i:
            raise InputError(bad + "range=LO..HI takes two integers, LO below HI (range=0..30522)")
        return f"range={lo_i}..{hi_i}"
    from pathlib import Path

    if not arg.strip():
        raise InputError(bad + "file=PATH names a .pt, .npy or text file")
    if not Path(arg.strip()).is_file():
        raise InputError(bad + f"no file {arg.strip()!r}")
    return f"file={arg.strip()}"


def parse_all(spec) -> tuple[Input, ...]:
    """Inputs from one spec (a string, an int, a shape tuple, an Input), a list of specs, or a
    dict of name -> spec (keyword inputs)."""
    if isinstance(spec, dict):
        out = []
        for name, item in spec.items():
            one = parse(item)
            out.append(Input(one.shape, one.dtype, name, one.batched, one.values))
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
