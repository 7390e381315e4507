"""Multi-view synthetic data, tiny checkpoints in every format, and EPIC-Kitchens-like records."""

from __future__ import annotations

import importlib.util
import os

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from tests.training.conftest import NUM_CLASSES, make_dataset, render, tiny_config  # noqa: F401
from vivit_jax import config_lib, sharding
from vivit_jax import experiment as experiment_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_config(relative_path: str, arg: str | None = None):
    spec = importlib.util.spec_from_file_location("cfg", os.path.join(REPO, relative_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def video(seed: int, index: int, views: int) -> tuple[np.ndarray, int]:
    """`[views, T, H, W, 3]` of one test video (each view another random placement) and label."""
    rng = np.random.default_rng([seed, 2, index])
    label = int(rng.integers(NUM_CLASSES))
    return np.stack([render(rng, label) for _ in range(views)]), label


def multiview_dataset_fn(num_test: int = 13, views: int = 3, repeat_video: int | None = None):
    """`dataset_fn` whose test split has `num_test` videos of `views` views; padding rows have
    batch_mask 0 and video_index -1. `repeat_video` puts that video into every batch (a bug)."""

    def dataset_fn(config, *, mesh, start_step):
        ds = make_dataset(config, mesh=mesh, start_step=start_step)
        tb = config.dataset_configs.test_batch_size or config.eval_batch_size or config.batch_size

        def put(batch):
            if mesh is None:
                return batch
            s = NamedSharding(mesh, PartitionSpec("data"))
            return {k: jax.device_put(v, s) for k, v in batch.items()}

        def test():
            for start in range(0, num_test, tb):
                idx = [i if i < num_test else -1 for i in range(start, start + tb)]
                if repeat_video is not None:
                    idx[0] = repeat_video
                xs, ys = zip(*(video(config.rng_seed, max(i, 0), views) for i in idx))
                yield put(
                    {
                        "inputs": np.stack(xs),
                        "label": np.asarray(ys, np.int32),
                        "batch_mask": np.asarray([i >= 0 for i in idx], np.float32),
                        "video_index": np.asarray(idx, np.int32),
                    }
                )

        ds.test_iter = test
        ds.meta_data.update(num_test_examples=num_test, num_test_views=views)
        return ds

    return dataset_fn


def experiment(config, num_devices: int, dataset_fn):
    """An `experiment.Experiment` on the first `num_devices` devices."""
    config = config_lib.complete_config(config)
    mesh = sharding.create_mesh(1, devices=jax.devices()[:num_devices])
    dataset = dataset_fn(config, mesh=mesh, start_step=0)
    return experiment_lib.build_experiment(config, mesh=mesh, dataset=dataset)


@pytest.fixture(scope="module")
def random_params():
    """Random parameters of `tiny_config()`'s model (numpy)."""
    exp = experiment(tiny_config(), 1, multiview_dataset_fn())
    params = jax.device_get(experiment_lib.initial_state(exp).params)
    head = params["output_projection"]  # Zero-initialised: make the logits differ.
    head["kernel"] = np.random.default_rng(0).normal(0, 1, head["kernel"].shape).astype(np.float32)
    return params
