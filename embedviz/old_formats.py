"""What this project reads that other versions wrote: the heads' configurations of runs made before the
heads were named after their papers, and the seed repository's pickled embeddings.

A checkpoint or meta file of those runs describes its head as {"kind": ..., arguments}: "margin" with
s, m1, m2, m3 for the whole angular-margin family, "subcenter" with `subcenters`, and a kind for each
newer head. head_config reads it as the class that now runs the same numbers.
"""

import numpy as np

from embedviz.run_files import RunFileError, check_arrays, run_paths

OLD_KINDS = {"softmax": "Softmax", "adacos": "AdaCos", "curricular": "CurricularFace", "elastic": "ElasticFace",
             "magface": "MagFace", "adaface": "AdaFace"}  # the heads whose arguments kept their names


def head_config(config, head_class):
    """{"class": ..., arguments} of a checkpoint's or meta file's head, in the form head.config() gives;
    an old {"kind": ...} one is read as head_class (a class name: the preset's, or the head now built)
    where its margins fit that class's form (ArcFace: m1 = 1, m3 = 0, m = m2), else as CombinedMargin
    with the same margins."""
    config = dict(config)
    if "kind" not in config:
        return config
    kind = config.pop("kind")
    if kind in OLD_KINDS:
        return {"class": OLD_KINDS[kind], **config}
    if kind not in ("margin", "subcenter"):
        raise ValueError(f"a head of kind {kind!r}, which no version of this project made")
    s, k = config["s"], config.get("subcenters", 1)
    m1, m2, m3 = config.get("m1", 1.0), config.get("m2", 0.0), config.get("m3", 0.0)
    forms = {"NormFace": (m1 == 1 and m2 == m3 == 0 and k == 1, {}),
             "SphereFace": (m2 == m3 == 0 and k == 1, {"m": m1}),
             "CosFace": (m1 == 1 and m2 == 0 and k == 1, {"m": m3}),
             "ArcFace": (m1 == 1 and m3 == 0 and k == 1, {"m": m2}),
             "SubCenterArcFace": (m1 == 1 and m3 == 0, {"m": m2, "k": k})}
    fits, arguments = forms.get(head_class, (False, None))
    if fits:
        return {"class": head_class, "s": s, **arguments}
    return {"class": "CombinedMargin", "s": s, "m1": m1, "m2": m2, "m3": m3, "k": k}


def load_seed_run(out_dir, model_name):
    """The seed repository's pickled layout, {'train': [one array per epoch], 'val': [...]} for the
    embeddings and alike for the labels, as (embeddings, labels, meta) of this project's layout.

    Each epoch's rows are put in label order: the seed's rows need not be the same images from
    one epoch to the next, and a frame does not depend on the order of its points.
    """
    paths = run_paths(out_dir, model_name)
    try:
        embeddings = np.load(paths["embeddings"], allow_pickle=True).item()
        labels = np.load(paths["labels"], allow_pickle=True).item()
        frames, frame_labels, splits = [], None, {}
        for split in ("train", "val"):
            split_frames, split_labels = [], None
            for epoch_embeddings, epoch_labels in zip(embeddings[split], labels[split], strict=True):
                epoch_embeddings, epoch_labels = np.asarray(epoch_embeddings, np.float32), np.asarray(epoch_labels)
                order = np.argsort(epoch_labels, kind="stable")
                if split_labels is None:
                    split_labels = epoch_labels[order]
                elif not np.array_equal(split_labels, epoch_labels[order]):
                    raise ValueError(f"the {split} labels change from one epoch to the next")
                split_frames.append(epoch_embeddings[order])
            frames.append(np.stack(split_frames))
            splits[split] = len(split_labels)
            frame_labels = split_labels if frame_labels is None else np.concatenate([frame_labels, split_labels])
        embeddings = np.concatenate(frames, axis=1)
        labels = frame_labels.astype(np.int64)
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, IndexError) as error:
        raise RunFileError(f"{paths['embeddings']} and {paths['labels']} are not in the seed repository's "
                           f"layout ({type(error).__name__}: {error})") from None
    check_arrays(embeddings, labels, paths["embeddings"], paths["labels"])
    n_frames, n_train = len(embeddings), splits["train"]
    meta = {
        "model": model_name, "dataset": "unknown (seed repository layout)",
        "class_names": [str(i) for i in range(int(labels.max()) + 1)],
        "splits": {"train": [0, n_train], "val": [n_train, len(labels)]}, "epochs_completed": n_frames,
        "options": {"epochs": n_frames},
        "history": [{"epoch": k + 1, "val_accuracy": None} for k in range(n_frames)],  # no epoch 0 there
    }
    return embeddings, labels, meta
