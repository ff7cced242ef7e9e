"""Random bytes and random shapes reach the loaders: they either load or fail with the project's clean errors."""

import json
import os
import struct
import tempfile

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedviz import run_files
from embedviz.datasets import DatasetError
from embedviz.idx_files import idx_count

# In CI the fuzz tests draw the same examples every run, so that a red run can be repeated;
# elsewhere each run explores new ones.
REPEATABLE = settings(derandomize=True, database=None, print_blob=True) if os.environ.get("CI") else settings()
FUZZ = settings(REPEATABLE, max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def idx_like_bytes():
    """Random bytes, and bytes that start like a real IDX header so the deeper checks are reached too."""
    header = st.builds(lambda magic, dims: struct.pack(f">I{len(dims)}I", magic, *dims),
                       st.sampled_from([0x0801, 0x0803, 0x0802, 0x0903]),
                       st.lists(st.sampled_from([0, 1, 2, 28, 60000]), min_size=1, max_size=3))
    return st.one_of(st.binary(max_size=200), st.builds(lambda h, body: h + body, header, st.binary(max_size=3000)))


@FUZZ
@given(content=idx_like_bytes(), ndim=st.sampled_from([1, 3]))
def test_idx_reader_loads_or_says_what_is_wrong(content, ndim):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "train-images-idx3-ubyte")
        with open(path, "wb") as f:
            f.write(content)
        try:
            count = idx_count(path, ndim)
        except DatasetError as error:
            assert path in str(error)
        else:
            assert count >= 0 and len(content) >= 4 + 4 * ndim


def npy_like_bytes():
    def real_npy(array):
        with tempfile.TemporaryFile() as f:
            np.save(f, array)
            f.seek(0)
            return f.read()
    arrays = st.builds(lambda shape, dtype: np.zeros(shape, dtype),
                       st.lists(st.integers(0, 4), max_size=3), st.sampled_from([np.float32, np.int64, np.uint8]))
    truncated = st.builds(lambda data, cut: data[:cut], st.builds(real_npy, arrays), st.integers(0, 200))
    return st.one_of(st.binary(max_size=300), truncated, st.builds(real_npy, arrays))


@FUZZ
@given(content=npy_like_bytes())
def test_npy_reader_loads_or_says_what_is_wrong(content):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "all_m_embeddings.npy")
        with open(path, "wb") as f:
            f.write(content)
        try:
            array = run_files.load_npy(path)
        except run_files.RunFileError as error:
            assert path in str(error)
        else:
            assert isinstance(array, np.ndarray)


shapes = st.lists(st.integers(0, 5), min_size=0, max_size=4)
json_values = st.recursive(st.none() | st.integers(-3, 5) | st.floats(allow_nan=False) | st.text(max_size=3),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                                       max_size=3), max_leaves=8)


@FUZZ
@given(embeddings_shape=shapes, labels_shape=shapes, epochs_completed=json_values | st.integers(-1, 6),
       split=st.lists(st.integers(-2, 6), min_size=0, max_size=3), extra=json_values,
       labels_dtype=st.sampled_from([np.int64, np.float32]))
def test_run_loader_accepts_only_consistent_runs(embeddings_shape, labels_shape, epochs_completed, split, extra,
                                                  labels_dtype):
    with tempfile.TemporaryDirectory() as tmp:
        paths = run_files.run_paths(tmp, "m")
        np.save(paths["embeddings"], np.ones(embeddings_shape, np.float32))
        np.save(paths["labels"], np.zeros(labels_shape, labels_dtype))
        meta = {"model": "m", "epochs_completed": epochs_completed, "class_names": ["0", "1"],
                "splits": {"train": [0, split[0] if split else 0], "val": split}, "options": {"epochs": 5},
                "history": [{"epoch": k, "val_accuracy": 0.5} for k in range(4)], "extra": extra}
        with open(paths["meta"], "w") as f:
            json.dump(meta, f)
        try:
            embeddings, labels, loaded = run_files.load_run(tmp, "m")
        except run_files.RunFileError:
            return
        n_frames = loaded["epochs_completed"] + 1
        assert embeddings.ndim == 3 and embeddings.shape[1] == len(labels) and len(embeddings) == n_frames >= 1
        assert loaded["splits"]["val"][1] == len(labels)
