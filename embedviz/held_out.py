"""The classes a run uses (--classes) and those it holds out of training (--unseen-classes).

Two numberings of the classes meet here. A label is a class as the dataset numbers it; a target is
a class as the head numbers it, 0 to the number of classes trained - 1, one row of its weights. With
every class trained the two are the same; with classes held out or left out, target_of maps one to
the other, -1 for a class that is not trained.
"""

import dataclasses

import torch


def check_classes(unseen, num_classes, classes=()):
    """--classes and --unseen-classes against the dataset's classes: known, the unseen among the classes
    used, 2 seen and 2 unseen at least. Raises ValueError, naming the option."""
    for flag, chosen in (("--classes", classes), ("--unseen-classes", unseen)):
        if chosen and max(chosen) >= num_classes:
            raise ValueError(f"{flag} {max(chosen)}: the dataset has classes 0-{num_classes - 1}")
        if len(set(chosen)) < len(chosen):
            raise ValueError(f"{flag} {' '.join(map(str, chosen))}: a class is named twice")
    used = classes or range(num_classes)
    if classes and not set(unseen) <= set(classes):
        raise ValueError(f"--unseen-classes {' '.join(map(str, sorted(set(unseen) - set(classes))))}: "
                         "not among --classes")
    if classes and len(classes) - len(unseen) < 2:
        raise ValueError(f"--classes: {len(classes) - len(unseen)} seen classes; train on 2 at least")
    if unseen and not 2 <= len(unseen) <= len(used) - 2:
        raise ValueError(f"--unseen-classes: hold out from 2 to {len(used) - 2} classes, so that at least 2 "
                         f"are seen and 2 unseen; got {len(unseen)}")


def select(data, classes, unseen_classes):
    """(the dataset with the images of `classes` alone, or all when none are named; target_of); raises
    ValueError for classes the dataset does not have, or too few seen or unseen."""
    check_classes(unseen_classes, len(data.class_names), classes)
    if classes:
        data = with_classes(data, classes)
    return data, target_of(len(data.class_names), classes, unseen_classes)


def with_classes(data, classes):
    """The dataset with the images of `classes` alone; labels stay the dataset's."""
    chosen = torch.tensor(classes)
    train, val = torch.isin(data.train_labels, chosen), torch.isin(data.val_labels, chosen)
    return dataclasses.replace(data, train_images=data.train_images[train], train_labels=data.train_labels[train],
                               val_images=data.val_images[val], val_labels=data.val_labels[val])


def target_of(num_classes, classes=(), unseen_classes=()):
    """Label -> target: the seen classes in order, -1 for the unseen and for those left out (not among
    `classes`, when given)."""
    targets = torch.full((num_classes,), -1, dtype=torch.long)
    seen = [c for c in (classes or range(num_classes)) if c not in unseen_classes]
    targets[seen] = torch.arange(len(seen))
    return targets


def meta_entries(classes, unseen_classes, targets):
    """What the meta file records of the classes: those used, and the seen and unseen."""
    entries = {"classes": classes} if classes else {}
    if unseen_classes:
        entries["seen_classes"] = [c for c in range(len(targets)) if targets[c] >= 0]
        entries["unseen_classes"] = unseen_classes
    return entries
