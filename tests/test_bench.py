"""bench.py's training parts on tiny data, in this process: they must keep running as train.py changes
(the timings themselves are the benchmark's, not a test's)."""

import bench


def test_our_training_part_runs_train_pys_epochs_and_the_seeds_way_runs_its_own(tiny_mnist):
    args = bench.parse_args(["--dataset", "mnist", "--data-dir", tiny_mnist, "--epochs", "2", "--seed-epochs", "1"])
    ours = bench.part_train_ours(args)
    assert len(ours["epoch_seconds"]) == len(ours["train_seconds"]) == 2
    assert all(epoch >= train > 0 for epoch, train in zip(ours["epoch_seconds"], ours["train_seconds"]))
    assert ours["n_train"] == 400 and 0 <= ours["val_accuracy"] <= 1
    assert ours["flops_per_image"] > 1e6
    seed = bench.part_train_seed(args)
    assert len(seed["epoch_seconds"]) == 1 and seed["n_train"] == 400 and seed["batch_size"] == 32


def test_the_steady_time_leaves_the_warm_up_out():
    assert bench.steady([9.0, 2.0, 4.0, 3.0]) == 3.0
    assert bench.steady([5.0]) == 5.0
