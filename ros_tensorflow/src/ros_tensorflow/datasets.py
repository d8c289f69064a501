"""Datasets a train goal can name."""

import numpy as np


class DatasetError(ValueError):
    """A dataset that cannot be used; the message says which and why."""


def make_synthetic(n_samples=1000, input_dim=10, output_dim=2, n_draws=20, seed=None):
    """The tutorial's data: each sample is an input_dim-bin histogram of n_draws
    draws from a Gaussian whose mean depends on the class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, output_dim, n_samples)
    means = (np.arange(output_dim) + 0.5) * input_dim / output_dim
    draws = rng.normal(means[y][:, None], input_dim / (3.0 * output_dim), size=(n_samples, n_draws))
    bins = np.clip(np.floor(draws), 0, input_dim - 1).astype(int)
    x = np.zeros((n_samples, input_dim))
    np.add.at(x, (np.repeat(np.arange(n_samples), n_draws), bins.ravel()), 1.0)
    return x, y


def load(name, input_dim, output_dim):
    """(x, y) of the dataset called name."""
    if name == "synthetic":
        return make_synthetic(input_dim=input_dim, output_dim=output_dim)
    raise DatasetError(f"unknown dataset '{name}' (known: synthetic)")
