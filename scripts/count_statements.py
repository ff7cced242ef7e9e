"""The project's statements that the default run executes, as coverage.py counts them (its
multiprocessing mode, so that the render workers count too): the statements a reader must trace.

    pip install coverage && python scripts/count_statements.py

Runs, in a temporary folder, `train.py --model vgg8_arcface --dataset mnist-sample --epochs 2`, then
`visualization.py --model vgg8_arcface --no-figures` (the two GIFs), then `visualization.py --model
vgg8_arcface` (the default drawing), and prints the statements each executed and those the first
two executed together, file by file (a statement counted once however often it ran).
"""

import glob
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = {"train": ["train.py", "--model", "vgg8_arcface", "--dataset", "mnist-sample", "--epochs", "2"],
            "gifs": ["visualization.py", "--model", "vgg8_arcface", "--no-figures"],
            "drawing": ["visualization.py", "--model", "vgg8_arcface"]}


def executed(data_files):
    """{file: executed statements' line numbers} over coverage data files, as coverage's report counts them."""
    import coverage
    from coverage.data import CoverageData

    with tempfile.TemporaryDirectory() as tmp:
        combined = CoverageData(os.path.join(tmp, ".coverage"))
        for path in data_files:
            part = CoverageData(path)
            part.read()
            combined.update(part)
        combined.write()
        cov = coverage.Coverage(data_file=combined.data_filename())
        cov.load()
        lines = {}
        for path in combined.measured_files():
            _, statements, _, missing, _ = cov.analysis2(path)
            lines[os.path.relpath(path, ROOT)] = set(statements) - set(missing)
    return {path: found for path, found in lines.items() if found}


def main():
    with tempfile.TemporaryDirectory() as work:
        rc = os.path.join(work, "coveragerc")
        with open(rc, "w") as f:
            f.write(f"[run]\nconcurrency = multiprocessing\nparallel = True\nsource = {ROOT}\n"
                    f"omit = {ROOT}/tests/*\n    {ROOT}/scripts/*\n")
        counts = {}
        for name, command in COMMANDS.items():
            folder = os.path.join(work, name)
            os.makedirs(folder)
            env = {**os.environ, "COVERAGE_RCFILE": rc, "COVERAGE_FILE": os.path.join(folder, ".coverage")}
            subprocess.run([sys.executable, "-m", "coverage", "run", *command, "--out-dir", os.path.join(work, "data")],
                           cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            counts[name] = executed(glob.glob(os.path.join(folder, ".coverage*")))
    union = {path: counts["train"].get(path, set()) | counts["gifs"].get(path, set())
             for path in sorted(set(counts["train"]) | set(counts["gifs"]))}
    print(f"{'file':<28} {'train':>6} {'gifs':>6} {'both':>6}")
    for path, lines in union.items():
        print(f"{path:<28} {len(counts['train'].get(path, ())):>6} {len(counts['gifs'].get(path, ())):>6} {len(lines):>6}")
    total = {name: sum(map(len, found.values())) for name, found in counts.items()}
    print(f"{'all':<28} {total['train']:>6} {total['gifs']:>6} {sum(map(len, union.values())):>6}")
    print(f"the default drawing (visualization.py with its figures): {total['drawing']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
