"""The package's layers: every import goes down, counting the imports made inside functions.

Low to high (a package may import from the layers below it and from itself, nothing else):

    names  units  torch_compat      leaves: import nothing of the package
    attention                       the SAGAN layers, SDPA backend selection, the torch-function
                                    mode that routes attention (and autocast, group_norm) on meta
    sa_profiler (__init__)          the root package: __version__ and a lazy view of attention
    targets                         the card catalogue; a card's selection facts come from
                                    attention.backends (`GPU.caps`)
    question                        what an answer depends on besides the workload: a card, a torch
    engine                          the simulation and measurement of one step: runner, rules,
                                    layouts, autocast emulation, allocator, tracker, timing
    advice                          recommendations from the engine's answers
    models | sweeps                 whole user models (fit) | grids of workloads; neither imports the other
    report                          console, HTML and figures of the layers below
    cli                             the command line
    validation | testing | fit      measured-against-simulated checks and the public Python API

Why this order and not another: the engine imports attention in ten places (the backends, the
routing mode, the attention layers) and attention needed the engine for one stride predicate, so
attention is below the engine (the predicate lives in attention/memory_format.py). The catalogue
asks attention for a card's backend facts and the engine asks the catalogue for cards, so targets
sits between them. The root `__init__` runs before any submodule is imported, so it stays low: it
forwards to attention only, and whatever imports `sa_profiler.__version__` imports downward.
Advice ranks what the engine answers; models (a whole model's fit, its largest batch) and sweeps
call advice, and the report renders all of them. Two packages in one layer may not import each
other: that would be an order the table does not state.

`KNOWN_UPWARD` lists the upward imports that still exist and are someone's to remove; it may only
shrink (a test fails for an entry that no longer exists), and nothing may join it quietly.
"""

from __future__ import annotations

from test_architecture import import_graph

LAYERS = (
    ("names", "units", "torch_compat"),
    ("attention",),
    ("sa_profiler",),
    ("targets",),
    ("question",),
    ("engine",),
    ("advice",),
    ("models", "sweeps"),
    ("report",),
    ("cli",),
    ("validation", "testing", "fit"),
)

KNOWN_UPWARD = {
    # `Advice._repr_html_` renders through the report
    ("sa_profiler.advice.advise", "sa_profiler.report.advice_html"),
    # `FitResult._repr_html_` renders through the report
    ("sa_profiler.models.fit", "sa_profiler.report.fit_html"),
}


def component(module: str) -> str:
    """The layer table's name for a module: its top-level package or module under sa_profiler."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def rank(module: str) -> int:
    name = component(module)
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    raise KeyError(f"{module}: {name!r} is in no layer of LAYERS")


def crossings(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """The (importer, imported) pairs that go up a layer, or sideways to another package of the
    same layer. Imports within one package are never counted."""
    found = set()
    for importer, deps in graph.items():
        for imported in deps:
            if component(importer) == component(imported):
                continue
            if rank(imported) >= rank(importer):
                found.add((importer, imported))
    return found


def test_every_module_has_a_layer():
    unplaced = sorted({component(m) for m in import_graph()} - {name for layer in LAYERS for name in layer})
    assert unplaced == [], f"place these in LAYERS: {unplaced}"


def test_no_import_goes_up():
    new = sorted(crossings(import_graph()) - KNOWN_UPWARD)
    assert new == [], "imports from a lower layer to a higher one (or to a sibling):\n" + "\n".join(
        f"  {a} -> {b}" for a, b in new)


def test_known_upward_imports_still_exist():
    """An entry goes from KNOWN_UPWARD as soon as its import does: the list only shrinks."""
    gone = sorted(KNOWN_UPWARD - crossings(import_graph()))
    assert gone == [], "no longer imported upward, remove from KNOWN_UPWARD:\n" + "\n".join(
        f"  {a} -> {b}" for a, b in gone)


def test_the_layer_checker_finds_an_upward_import():
    graph = import_graph()
    before = crossings(graph)
    up = ("sa_profiler.attention.backends", "sa_profiler.engine.runner")
    sideways = ("sa_profiler.sweeps.sweep", "sa_profiler.models.fit")
    down = ("sa_profiler.report.console", "sa_profiler.units")
    within = ("sa_profiler.engine.layouts", "sa_profiler.engine.runner")  # upward in no sense: one package
    for importer, imported in (up, sideways, down, within):
        graph[importer].add(imported)
    assert crossings(graph) - before == {up, sideways}
    assert crossings({"sa_profiler.fit": {"sa_profiler"}}) == set()
    assert crossings({"sa_profiler": {"sa_profiler.fit"}}) == {("sa_profiler", "sa_profiler.fit")}
