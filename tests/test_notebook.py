"""notebook.ipynb as committed: valid, its parameters in a cell tagged for papermill, no outputs.
.ci/run executes it (papermill, with dataset mnist-sample and 2 epochs)."""

import ast
import os

import nbformat

from conftest import ROOT


def test_the_notebook_is_valid_parametrised_and_saved_without_outputs():
    notebook = nbformat.read(os.path.join(ROOT, "notebook.ipynb"), as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    tagged = [cell for cell in code if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is code[0]  # papermill puts its values right after it
    assigned = {target.id for node in ast.parse(tagged[0].source).body for target in node.targets}
    assert {"dataset", "epochs", "out_dir"} <= assigned
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    for cell in code:
        ast.parse(cell.source)  # each cell is Python as written
