"""summary.py: the table of the last epoch's figures, averaged over seeds."""

import json

import pytest

import summary
from conftest import call_main


def write_meta(folder, model, seed, val_accuracy, unseen_tar=None, unseen_classes=(6, 7, 8, 9)):
    folder.mkdir(exist_ok=True)
    last = {"epoch": 3, "val_accuracy": val_accuracy}
    if unseen_tar is not None:
        last["verification"] = {"unseen": {"tar_at_far": {"0.001": unseen_tar}}}
    meta = {"dataset": "mnist-sample", "seen_classes": [0, 1, 2, 3, 4, 5], "unseen_classes": list(unseen_classes),
            "options": {"seed": seed}, "history": [{"epoch": 1, "val_accuracy": 0.1}, last]}
    (folder / f"all_{model}_meta.json").write_text(json.dumps(meta))


def test_cells_are_the_mean_and_sample_standard_deviation(tmp_path):
    write_meta(tmp_path / "a", "vgg8_arcface", 0, 0.90, unseen_tar=0.02)
    write_meta(tmp_path / "b", "vgg8_arcface", 1, 0.96, unseen_tar=None)
    text = summary.table(summary.load_metas([tmp_path / "a", tmp_path / "b"], None))
    row = next(line for line in text.splitlines() if "vgg8_arcface" in line).split(" | ")
    # mean 93.0; standard deviation sqrt(((90 - 93)^2 + (96 - 93)^2) / (2 - 1)) = 4.24
    assert row[1] == "93.0 ± 4.2%"
    assert row[3] == "2.0%"  # recorded by one run only
    assert row[2] == "-"     # recorded by none
    assert "last epoch (3), mean ± standard deviation over seeds 0, 1" in text.splitlines()[0]


def test_rows_follow_the_models_asked_for(tmp_path):
    for model, accuracy in [("vgg8_softmax", 0.5), ("vgg8_arcface", 0.75)]:
        write_meta(tmp_path, model, 0, accuracy)
    result = call_main(summary.main, str(tmp_path), "--model", "vgg8_softmax", "vgg8_arcface")
    rows = [line for line in result.stdout.splitlines() if line.startswith("| `")]
    assert [row.split(" | ")[:2] for row in rows] == [["| `vgg8_softmax`", "50.0%"], ["| `vgg8_arcface`", "75.0%"]]


@pytest.mark.parametrize("case,fragments", [
    ("empty", ["no runs", "all_*_meta.json"]),
    ("missing", ["cannot read the run", "all_vgg8_softmax_meta.json"]),
    ("unlike", ["vgg8_arcface's run (seed 1) has unseen_classes [6, 7]", "must match"]),
])
def test_bad_folders_are_one_line(tmp_path, case, fragments):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    if case != "empty":
        write_meta(a, "vgg8_arcface", 0, 0.9)
        write_meta(a, "vgg8_softmax", 0, 0.9)
        write_meta(b, "vgg8_arcface", 1, 0.9, unseen_classes=(6, 7) if case == "unlike" else (6, 7, 8, 9))
        if case == "unlike":
            write_meta(b, "vgg8_softmax", 1, 0.9)
    result = call_main(summary.main, str(a), str(b))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and all(fragment in lines[0] for fragment in fragments), result.stderr
