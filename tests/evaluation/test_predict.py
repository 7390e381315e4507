"""predict: top-5 class names of a video file generated with PyAV, with the test protocol."""

import os

import jax
import numpy as np

from tests.evaluation.conftest import REPO
from vivit_jax import predict
from vivit_jax.checkpoints import save_params_orbax


def _demo_checkpoint(tmp_path, num_classes=8):
    """Random parameters (head included) of configs/demo.py:tiny's model, as a workdir."""
    from tests.evaluation.conftest import load_config
    from vivit_jax import config_lib
    from vivit_jax.models import create_model

    config = config_lib.complete_config(load_config("configs/demo.py", "tiny"))
    model = create_model(config.model, num_classes)
    params = jax.device_get(
        model.init(jax.random.key(0), np.zeros((1, 8, 16, 16, 3), np.float32), train=False)
    )["params"]
    head = params["output_projection"]
    head["kernel"] = np.random.default_rng(0).normal(0, 1, head["kernel"].shape).astype(np.float32)
    save_params_orbax(tmp_path / "work" / "checkpoints", params, 3)
    return str(tmp_path / "work"), model, params


def _video(path):
    from vivit_jax.data.video_io import write_video

    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (20, 24, 32, 3), dtype=np.uint8)
    write_video(str(path), frames, fps=10)
    return str(path)


def test_predict_prints_top5_names_and_time(tmp_path, capsys):
    workdir, model, params = _demo_checkpoint(tmp_path)
    video = _video(tmp_path / "clip.mp4")
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"class {i}" for i in range(8)))
    config = os.path.join(REPO, "configs", "demo.py") + ":tiny"
    status = predict.main(
        [
            "predict",
            f"--config={config}",
            f"--checkpoint={workdir}",
            f"--class_names={names}",
            video,
        ]
    )
    assert status == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(f"{video}: 1 view(s) of 20 frames")
    probs = [float(line.split()[0]) for line in lines[1:6]]
    assert all(line.split("  ", 2)[-1].startswith("class ") for line in lines[1:6])
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-5
    assert "1 video(s) in" in lines[-1] and "on cpu" in lines[-1]


def test_prediction_is_the_softmax_of_the_averaged_view_logits(tmp_path):
    from tests.evaluation.conftest import load_config
    from vivit_jax.data.pipeline import video_test_views
    from vivit_jax.data.video_io import decode_video

    workdir, model, params = _demo_checkpoint(tmp_path)
    video = _video(tmp_path / "clip.mp4")
    config = load_config("configs/demo.py", "tiny")
    config.dataset_configs.num_test_clips = 3
    config.dataset_configs.do_three_spatial_crops = True
    config.dataset_configs.min_resize = 20
    predictor = predict.Predictor(workdir, config)
    result = predictor(video, top_k=8)
    assert result.num_views == 9
    views = video_test_views(decode_video(video, 20).frames, predictor.config.dataset_configs)
    logits = np.asarray(model.apply({"params": params}, views, train=False)).mean(0)
    want = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    got = dict(result.top[None])
    names = predictor.class_names
    np.testing.assert_allclose([got[n] for n in names], want, rtol=1e-5, atol=1e-6)


def test_usage_errors(tmp_path, capsys):
    assert predict.main(["predict", "--checkpoint=x"]) == 2
    assert predict.main(["predict", "--checkpoint=x", str(tmp_path / "missing.mp4")]) == 2
    assert "No such file" in capsys.readouterr().out
