"""predict: top-5 class names of real video files, and every bad input reported, not fatal."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.evaluation import predict_fixtures as fx
from tests.evaluation.conftest import REPO
from vivit_jax import predict


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return fx.demo_checkpoint(tmp_path_factory.mktemp("predict_ckpt"))[0]


def _run(*args, cwd):
    """`python -m vivit_jax.predict --config=demo:tiny *args` as a real process."""
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, "-m", "vivit_jax.predict", f"--config={fx.DEMO_CONFIG}", *args]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    return done.returncode, done.stdout.strip().splitlines(), done.stderr


def _headers(lines):
    """The first line of each video's report (predictions and failures), in order."""
    return [line for line in lines if line and not line.startswith(" ")][:-2]


def test_predict_prints_top5_names_and_time(tmp_path, capsys, workdir):
    video = fx.video_file(tmp_path / "clip.mp4")
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"class {i}" for i in range(8)))
    status = predict.main(
        [
            "predict",
            f"--config={fx.DEMO_CONFIG}",
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
    assert "1 video file(s) tried in" in lines[-2] and "on cpu" in lines[-2]
    assert lines[-1] == "Predicted 1 video(s); 0 input(s) failed."


def test_prediction_is_the_softmax_of_the_averaged_view_logits(tmp_path):
    from tests.evaluation.conftest import load_config
    from vivit_jax.data.augment import normalize
    from vivit_jax.data.pipeline import video_test_views
    from vivit_jax.data.video_io import decode_video

    workdir, model, params = fx.demo_checkpoint(tmp_path)
    video = fx.video_file(tmp_path / "clip.mp4")
    config = load_config("configs/demo.py", "tiny")
    config.dataset_configs.num_test_clips = 3
    config.dataset_configs.do_three_spatial_crops = True
    config.dataset_configs.min_resize = 20
    predictor = predict.Predictor(workdir, config)
    result = predictor(video, top_k=8)
    assert result.num_views == 9
    views = video_test_views(decode_video(video, 20).frames, predictor.config.dataset_configs)
    assert views.dtype == np.uint8
    inputs = normalize(views, predictor.config.dataset_configs.zero_centering)
    logits = np.asarray(model.apply({"params": params}, inputs, train=False)).mean(0)
    want = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    got = dict(result.top[None])
    names = predictor.class_names
    np.testing.assert_allclose([got[n] for n in names], want, rtol=1e-5, atol=1e-6)


def test_bad_inputs_are_reported_in_one_line_and_the_rest_predicted(tmp_path, workdir):
    good = fx.video_file(tmp_path / "good.mp4")
    audio = fx.audio_only(tmp_path / "audio.m4a")
    noise = fx.random_bytes(tmp_path / "x.mp4")
    cut = fx.truncated_copy(good, tmp_path / "cut.mp4")
    folder, in_folder, bad_in_folder = fx.video_folder(tmp_path / "videos", good)
    (tmp_path / "no_videos").mkdir()
    (tmp_path / "no_videos" / "readme.txt").write_text("text")
    inputs = [good, audio, noise, cut, folder, str(tmp_path / "no_videos"), "missing.mp4"]
    status, lines, _ = _run(f"--checkpoint={workdir}", *inputs, cwd=tmp_path)
    assert status == 1
    # Inputs that name no video are reported before the model loads; then every video in order.
    failed_first = [str(tmp_path / "no_videos"), "missing.mp4"]
    tried = [*failed_first, good, audio, noise, cut, *in_folder]
    headers = _headers(lines)
    assert [h.split(": ", 1)[0] for h in headers] == tried
    reasons = {h.split(": ", 1)[0]: h.split(": ", 1)[1] for h in headers}
    assert reasons["missing.mp4"] == "failed: no such file"
    assert reasons[str(tmp_path / "no_videos")].startswith("failed: no video files (looked for")
    assert reasons[audio] == "failed: no video stream"
    for path in (noise, cut, bad_in_folder):
        assert reasons[path].startswith("failed: cannot open (InvalidDataError"), reasons[path]
    for path in (good, *sorted(set(in_folder) - {bad_in_folder})):
        assert reasons[path].startswith("1 view(s) of 20 frames"), reasons[path]
    failed = [*failed_first, audio, noise, cut, bad_in_folder]
    assert lines[-1] == f"Predicted 3 video(s); 6 input(s) failed: {', '.join(failed)}"


def test_a_directory_of_good_videos_exits_0(tmp_path, workdir):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    videos = [fx.video_file(folder / n, 12) for n in ("b.webm", "a.AVI", "sub/c.mkv")]
    status, lines, _ = _run(f"--checkpoint={workdir}", "in", cwd=tmp_path)
    assert status == 0
    assert [h.split(": ", 1)[0] for h in _headers(lines)] == sorted(
        os.path.relpath(v, tmp_path) for v in videos
    )
    assert lines[-1] == "Predicted 3 video(s); 0 input(s) failed."


def test_an_unreadable_checkpoint_is_one_error_line(tmp_path):
    video = fx.video_file(tmp_path / "clip.mp4")
    noise = fx.random_bytes(tmp_path / "checkpoint.npz")
    status, lines, stderr = _run(f"--checkpoint={noise}", video, cwd=tmp_path)
    assert status == 1 and not any(line.startswith(video) for line in lines)
    assert (
        stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: cannot load --checkpoint={noise}: CheckpointError: ")
    )


@pytest.mark.parametrize("kind", ["missing", "empty_dir"])
def test_a_missing_checkpoint_is_one_error_line(tmp_path, capsys, kind):
    checkpoint = tmp_path / kind
    if kind == "empty_dir":
        checkpoint.mkdir()
    video = fx.video_file(tmp_path / "clip.mp4")
    assert predict.main(["predict", f"--checkpoint={checkpoint}", video]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: cannot load --checkpoint={checkpoint}: FileNotFoundError")


def test_class_names_that_do_not_fit_are_one_error_line(tmp_path, capsys, workdir):
    video = fx.video_file(tmp_path / "clip.mp4")
    names = tmp_path / "names.txt"
    names.write_text("a\nb\n")
    args = [f"--config={fx.DEMO_CONFIG}", f"--checkpoint={workdir}", f"--class_names={names}"]
    assert predict.main(["predict", *args, video]) == 1
    captured = capsys.readouterr()
    assert video not in captured.out
    assert captured.err.strip().splitlines()[-1] == (
        f"error: --class_names={names}: 2 class names for the 8 classes of {workdir}."
    )


@pytest.mark.parametrize(
    "content, reason",
    [
        (None, "FileNotFoundError"),
        (b"", "ValueError: {path} holds no class names."),
        (b"\n  \n", "ValueError: {path} holds no class names."),
        (b'{"a": "x"}', "ValueError: {path}: a JSON mapping's keys must be the class indices"),
        (b'{"1": "x"}', "ValueError: {path}: a JSON mapping's keys must be the class indices"),
        (b"\xbc\xff\x00", "UnicodeDecodeError"),
    ],
)
def test_an_unreadable_class_names_file_is_one_error_line(tmp_path, capsys, content, reason):
    path = tmp_path / "names.txt"
    if content is not None:
        path.write_bytes(content)
    video = fx.video_file(tmp_path / "clip.mp4")
    # The names are read before the checkpoint: a bad file fails fast, whatever the model.
    assert predict.main(["predict", "--checkpoint=unused", f"--class_names={path}", video]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: --class_names={path}: {reason.format(path=path)}"), err


@pytest.mark.parametrize(
    "text, names",
    [
        ("a\n\n b \n", ["a", "b"]),
        ('["x", "y"]', ["x", "y"]),
        ('{"1": "y", "0": "x"}', ["x", "y"]),
        ("42\n", ["42"]),  # One line that is also JSON: still a name.
    ],
)
def test_read_class_names(tmp_path, text, names):
    path = tmp_path / "names"
    path.write_text(text)
    assert predict.read_class_names(str(path)) == names


def test_nothing_valid_exits_1_without_loading_the_model(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".hidden.mp4").write_bytes(b"")
    inputs = [str(tmp_path / "missing.mp4"), str(tmp_path / "empty")]
    # A checkpoint that does not exist: loading it would print an error.
    assert predict.main(["predict", f"--checkpoint={tmp_path / 'none'}", *inputs]) == 1
    captured = capsys.readouterr()
    assert "error" not in captured.err
    lines = captured.out.strip().splitlines()
    assert lines[0] == f"{inputs[0]}: failed: no such file"
    assert lines[1].startswith(f"{inputs[1]}: failed: no video files")
    assert lines[-1] == f"Predicted 0 video(s); 2 input(s) failed: {', '.join(inputs)}"


def test_usage_errors(capsys):
    assert predict.main(["predict", "--checkpoint=x"]) == 2
    assert predict.main(["predict", "video.mp4"]) == 2
    assert predict.main(["predict", "--no_such_flag=1", "--checkpoint=x", "video.mp4"]) == 2
    assert capsys.readouterr().out.count("Usage: python -m vivit_jax.predict") == 3
