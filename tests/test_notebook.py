"""The example notebook runs on the CPU, and each result renders itself with its plots inline."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

import pytest

pytestmark = [pytest.mark.slow]  # a Jupyter kernel

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_example_notebook_runs_and_renders():
    nb = nbformat.read(EXAMPLES / "notebook.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(EXAMPLES)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    pages = [o["data"]["text/html"] for c in code for o in c.outputs if "text/html" in o.get("data", {})]
    assert len(pages) == 3, [list(o.get("data", {})) for c in code for o in c.outputs]
    advice, fit, sweep = pages
    assert "Recommended: <b>sdpa (auto)</b>" in advice and 'convert(model, &quot;sdpa&quot;)' in advice
    assert "Memory timeline of two training steps" in fit and "Tensors alive at the peak" in fit
    assert "What fits: peak / usable memory" in sweep and "The answer" in sweep
    for page in pages:  # drawn into this output's own elements, once plotly.js is there
        assert "Plotly.newPlot('sa" in page and "if(!window.Plotly)" in page
    # plotly.js inlined once per notebook (the first output): the notebook stays offline and small
    assert "window.define=undefined" in advice and not any("window.define=undefined" in p for p in (fit, sweep))
    size = len(nbformat.writes(nb).encode())
    assert size < 6 * 2**20, size
