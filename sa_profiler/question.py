"""The circumstances of a question, as one value that travels with every step.

A `Question` holds what an answer depends on besides the workload itself: the card (an object
with its memory, rates and capability: a catalogue card, a custom one, or this machine's CPU),
the torch release whose rules apply, the headroom and so the usable memory, AMP, the optimizer,
the engine, and the parallel setting. It is built once at the edge (`make_question`, which
the CLI's option parsing and the Python API both call), is frozen, and is written whole into
every output (`to_json`) and read back from there (`from_json`): a report rebuilt from a sweep's
files answers under the question the sweep was asked under, whichever torch runs the report.

Torch-free: the answer cache keys on it before torch loads.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

from sa_profiler import names, torch_compat
from sa_profiler.targets import gpus

DEFAULT_HEADROOM = 0.10  # of the card's memory (advice/recommend.py says why)
STRATEGIES = ("single", "ddp", "fsdp")
ENGINES = ("simulate", "measure")
CPU = gpus.HOST


@dataclass(frozen=True)
class Parallel:
    """How many ranks train the model and how (`single`: one device, no wrapper)."""

    world_size: int = 1
    strategy: str = "single"
    reshard_after_forward: bool = True  # FSDP2: free each block's gathered parameters after its forward
    find_unused_parameters: bool = False  # DDP: parameters the loss does not reach are found and skipped

    def __post_init__(self):
        if isinstance(self.world_size, bool) or not isinstance(self.world_size, int) or self.world_size < 1:
            raise ValueError(f"world size must be a positive integer, got {self.world_size!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown parallel strategy {self.strategy!r}; expected one of {', '.join(STRATEGIES)}")
        if self.strategy == "single" and self.world_size != 1:
            raise ValueError(f"world size {self.world_size} needs a strategy: ddp or fsdp")
        if self.find_unused_parameters and self.strategy != "ddp":
            raise ValueError("--find-unused-parameters is DDP's: give it with --parallel ddp")


@dataclass(frozen=True)
class Question:
    card: gpus.GPU  # the card itself, never rebuilt from its key; gpus.host() for this machine's CPU
    torch_version: str  # the torch release whose rules apply (X.Y[.Z], or the running one's full version)
    headroom: int = 0  # bytes kept free on the card
    amp: str | None = None  # whole-model steps: "fp16" or "bf16" autocast
    optimizer: str = "adam"  # whole-model steps
    engine: str = "simulate"
    parallel: Parallel = field(default_factory=Parallel)

    def __post_init__(self):
        if not isinstance(self.card, gpus.GPU):
            raise TypeError(f"a question's card is a targets.gpus.GPU, not {type(self.card).__name__}")
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; expected one of {', '.join(ENGINES)}")
        if self.amp is not None and self.amp not in names.AMP:
            raise ValueError(f"unknown amp {self.amp!r}; expected one of {', '.join(names.AMP)}")

    @property
    def on_cpu(self) -> bool:
        return self.card.key == CPU

    @property
    def gpu(self) -> gpus.GPU | None:
        """The card a step is costed for; None for this machine's CPU."""
        return None if self.on_cpu else self.card

    @property
    def key(self) -> str:
        """The card's key in rows: a catalogue key, `custom-<bytes>`, `<key>@<bytes>`, `cuda` or `cpu`."""
        if self.on_cpu:
            return CPU
        return "cuda" if self.card.local else self.card.key

    @property
    def usable(self) -> int:
        return self.card.total_memory - self.card.context_bytes - self.headroom

    @property
    def torch_release(self) -> str:
        """The rules' torch as people write it: 2.4, 2.14.1 (no build suffix)."""
        return self.torch_version.split("+")[0]

    def caps(self):
        """What SDPA backend selection needs to know, under this question's torch."""
        from sa_profiler.attention import backends

        return backends.CPU if self.on_cpu else self.card.caps(self.torch_version)

    def to_json(self) -> dict:
        card = asdict(self.card)
        card["capability"], card["aliases"] = list(self.card.capability), list(self.card.aliases)
        return {"card": card, "torch_version": self.torch_version, "headroom_bytes": self.headroom,
                "usable_bytes": self.usable, "amp": self.amp, "optimizer": self.optimizer, "engine": self.engine,
                "parallel": asdict(self.parallel)}

    @classmethod
    def from_json(cls, doc: dict) -> "Question":
        """The value `to_json` wrote (ValueError, one line, for anything else)."""
        try:
            known = {f.name for f in fields(gpus.GPU)}
            card = {k: v for k, v in doc["card"].items() if k in known}
            card["capability"], card["aliases"] = tuple(card["capability"]), tuple(card.get("aliases", ()))
            parallel = Parallel(**doc.get("parallel", {}))
            return cls(gpus.GPU(**card), str(doc["torch_version"]), int(doc["headroom_bytes"]), doc.get("amp"),
                       doc.get("optimizer", "adam"), doc.get("engine", "simulate"), parallel)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"not a question: {type(err).__name__}: {err}".splitlines()[0]) from None

    def canonical(self) -> str:
        """One line of JSON, keys sorted: equal questions give equal text (the answer cache's key)."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))


HEADROOM_FORM = "a percentage from 0% up to (not including) 100%, such as 10%, or a size such as 512M"


def parse_headroom(text: str) -> float | int:
    """`--headroom`: 10% -> 0.1 (a fraction of the card), 512M -> bytes; ValueError (one line,
    with the accepted form) otherwise."""
    from sa_profiler.units import ParseError, parse_bytes

    stripped = str(text).strip()
    if stripped.endswith("%"):
        try:
            pct = float(stripped[:-1])
        except ValueError:
            raise ValueError(f"cannot read --headroom {text!r}: expected {HEADROOM_FORM}") from None
        if not 0 <= pct < 100:  # nan fails both comparisons
            raise ValueError(f"--headroom {text} is out of range: expected {HEADROOM_FORM}")
        return pct / 100
    try:
        return parse_bytes(stripped)
    except (ValueError, ParseError):
        raise ValueError(f"cannot read --headroom {text!r}: expected {HEADROOM_FORM}") from None


def from_options(gpu: str | None, gpu_mem: str | None, headroom: str = "10%", torch_version: str | None = None,
                 engine: str = "simulate") -> Question:
    """The question the options `--gpu`/`--gpu-mem`, `--headroom` and `--torch-version` ask, for
    a card from the catalogue or a size (the local card is the CLI's to find): what the CLI's
    edge builds and what the answer cache keys on, without torch. ValueError (one line) for a
    bad option."""
    from sa_profiler.units import ParseError, parse_memory

    if gpu_mem:
        try:
            card = gpus.custom(parse_memory(gpu_mem))
        except ParseError as err:
            raise ValueError(str(err)) from None
    elif gpu:
        card = card_of(gpu)
    else:
        raise ValueError("no card: give --gpu NAME or --gpu-mem SIZE")
    return make_question(card, parse_headroom(headroom), torch_version=torch_version, engine=engine)


def headroom_bytes(card: gpus.GPU, headroom: float | int) -> int:
    """`headroom` as a fraction of the card's memory (a float below 1) or in bytes."""
    if isinstance(headroom, float) and headroom < 1:
        return int(card.total_memory * headroom)
    return int(headroom)


def card_of(card: gpus.GPU | str) -> gpus.GPU:
    """A card object, a catalogue name or alias, or "cpu" (UnknownGPU, one line, otherwise)."""
    if isinstance(card, gpus.GPU):
        return card
    if not isinstance(card, str):
        raise TypeError(f"a card is a targets.gpus.GPU or a catalogue name, not {type(card).__name__}")
    if isinstance(card, str) and card.strip().lower() == CPU:
        return gpus.host()
    return gpus.lookup(card)


def make_question(card: gpus.GPU | str, headroom: float | int = DEFAULT_HEADROOM, *,
                  torch_version: str | None = None, amp: str | None = None, optimizer: str = "adam",
                  engine: str = "simulate", parallel: Parallel | None = None) -> Question:
    """The question's value, checked: `card` a GPU, a catalogue name or "cpu"; `headroom` a
    fraction of the card's memory (< 1) or bytes; `torch_version` X.Y or X.Y.Z within the
    supported range (None: the installed torch). A Question is changed with
    `dataclasses.replace`, not rebuilt here."""
    if isinstance(card, Question):
        raise TypeError("make_question takes a card, not a Question: change one with dataclasses.replace")
    version = torch_compat.checked_torch_version(torch_version, engine)
    if version is None:
        version = torch_compat.installed_version() or "unknown"
    gpu = card_of(card)
    return Question(gpu, version, headroom_bytes(gpu, headroom), amp, optimizer, engine, parallel or Parallel())
