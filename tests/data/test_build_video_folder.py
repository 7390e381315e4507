"""video_folder: split folders, split lists and multi-label CSVs, each with the faults of real
folders (hidden, non-video and broken files, videos out of place, dirty split lists)."""

import os

import pytest
import tensorflow_datasets as tfds

from tests.data.video_fixtures import raw_examples, saved_report, write_clip
from vivit_jax.data import build as build_lib
from vivit_jax.data.builders import names, video_folder


def build(tmp_path, manual, config="short32"):
    return build_lib.build(
        f"video_folder/{config}",
        data_dir=str(tmp_path / "tfds"),
        manual_dir=str(manual),
        num_workers=2,
    )


def labels(builder, split, key="label"):
    """{video_id: label name(s)} of a built split, from the stored records."""
    if key == "label":
        names = builder.info.features["label"].names
        return {
            vid: names[f["label"].int64_list.value[0]]
            if f["label"].int64_list.value[0] >= 0
            else None
            for vid, f in raw_examples(builder, split).items()
        }
    names = builder.info.features["labels"].feature.names
    return {
        vid: [names[i] for i in f["labels"].int64_list.value]
        for vid, f in raw_examples(builder, split).items()
    }


@pytest.fixture(scope="module")
def split_folders(tmp_path_factory):
    """Layout (a): train/, val/ (as validation), test/, every codec, and the faults."""
    root = tmp_path_factory.mktemp("folders")
    write_clip(root / "train/ApplyEyeMakeup/clip1.mp4", 5, fps=25)
    write_clip(root / "train/ApplyEyeMakeup/g02.AVI", 4, seed=1)  # mpeg4, upper-case extension
    write_clip(root / "train/Basketball/clip1.mp4", 6, seed=2)  # same stem, other class
    write_clip(root / "train/Basketball/shot.webm", 4, seed=3)
    write_clip(root / "train/jump/j1.mkv", 4, seed=4)
    write_clip(root / "train/jump/j2.avi", 4, seed=5, codec="mjpeg")
    write_clip(root / "train/jump/j3.mov", 4, seed=6)
    (root / "train/Basketball/broken.avi").write_bytes(os.urandom(3000))
    (root / "train/Basketball/.hidden.mp4").write_bytes(b"not read")
    (root / "train/Basketball/notes.txt").write_text("not a video")
    (root / "train/.DS_Store").write_bytes(b"\0")
    write_clip(root / "train/.ipynb_checkpoints/x.mp4", 2)  # a hidden folder is no class
    write_clip(root / "train/Basketball/extra/deep.mp4", 2)
    write_clip(root / "train/stray.mp4", 2)
    write_clip(root / "train/jump/x.mp4", 2)
    os.rename(root / "train/jump/x.mp4", os.fsencode(root / "train/jump") + b"/\xff.mp4")
    write_clip(root / "val/Basketball/v1.mp4", 3, seed=7)
    write_clip(root / "val/YoYo/v2.webm", 3, seed=8)
    (root / "val/Empty").mkdir()  # a class with no video still is one
    write_clip(root / "test/jump/t1.mp4", 3, seed=9)
    return root


@pytest.fixture(scope="module")
def folders_built(split_folders, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("t")
    builder = build(tmp, split_folders)
    builder.tfds_dir = str(tmp / "tfds")
    return builder


def test_video_folder_split_folders_labels_ids_and_class_list(folders_built):
    builder = folders_built
    # sorted(): code-point order, upper case first; the union over all split folders.
    assert builder.info.features["label"].names == [
        "ApplyEyeMakeup",
        "Basketball",
        "Empty",
        "YoYo",
        "jump",
    ]
    assert labels(builder, "train") == {
        "ApplyEyeMakeup/clip1.mp4": "ApplyEyeMakeup",
        "ApplyEyeMakeup/g02.AVI": "ApplyEyeMakeup",
        "Basketball/clip1.mp4": "Basketball",
        "Basketball/shot.webm": "Basketball",
        "jump/j1.mkv": "jump",
        "jump/j2.avi": "jump",
        "jump/j3.mov": "jump",
    }
    assert labels(builder, "validation") == {
        "Basketball/v1.mp4": "Basketball",
        "YoYo/v2.webm": "YoYo",
    }
    assert labels(builder, "test") == {"jump/t1.mp4": "jump"}


def test_video_folder_split_folders_frames_fps_and_short_side(folders_built):
    examples = {
        ex["video_id"].decode(): ex for ex in tfds.as_numpy(folders_built.as_dataset(split="train"))
    }
    assert examples["ApplyEyeMakeup/clip1.mp4"]["video"].shape == (5, 32, 43, 3)
    assert examples["ApplyEyeMakeup/clip1.mp4"]["fps"] == pytest.approx(25)
    assert examples["Basketball/clip1.mp4"]["video"].shape[0] == 6
    assert all(len(ex["video"]) == 4 for k, ex in examples.items() if k.startswith("jump/"))


def test_video_folder_split_folders_report_names_skips_and_ignored(
    folders_built, split_folders, capsys
):
    report = folders_built.build_reports["train"]
    assert (report.rows, report.written) == (8, 7)
    assert list(report.undecodable) == ["Basketball/broken.avi"]
    assert report.ignored == {
        "stray.mp4": "not in a class folder",
        "Basketball/extra/deep.mp4": "in a sub-folder of class folder 'Basketball'",
        "jump/\ufffd.mp4": "the name b'\\xff.mp4' is not UTF-8",
    }
    saved = saved_report(folders_built)
    assert saved["train"]["ignored"] == report.ignored
    assert list(saved["train"]["undecodable"]) == ["Basketball/broken.avi"]
    rebuilt = build_lib.build("video_folder/short32", data_dir=folders_built.tfds_dir)
    assert "already built" in capsys.readouterr().out
    assert rebuilt.info.splits["train"].num_examples == 7
    assert rebuilt.info.metadata["manual_dir"] == str(split_folders)  # Which folder it is of.


@pytest.fixture(scope="module")
def split_lists(tmp_path_factory):
    """Layout (b): class folders at the root and UCF101-style lists, dirty."""
    root = tmp_path_factory.mktemp("lists")
    for i, rel in enumerate(
        ["Archery/a1.avi", "Archery/a2.avi", "Bowling/b1.mp4", "Bowling/b2.mp4"]
    ):
        write_clip(root / rel, 3, seed=i)
    (root / "Bowling/bad.mp4").write_bytes(b"\x00" * 100)
    (root / "Bowling/.hidden.mp4").write_bytes(b"x")  # not listed, so never read
    (root / "splits").mkdir()
    (root / "splits/train.txt").write_bytes(
        b"Archery/a1.avi 1\r\n"
        b"  Bowling/b1.mp4\t2  \r\n"
        b"\r\n"
        b"Zumba/gone.avi 3\r\n"  # missing: still names its class
        b"Bowling/bad.mp4 2\r\n"
        b"lonely.avi 1\r\n"
        b"Archery/a1.avi 1\r\n"
    )
    (root / "splits/test.txt").write_text("Archery/a2.avi\nBowling/b2.mp4\n")
    return root


def test_video_folder_split_lists_crlf_trailing_integers_and_skips(split_lists, tmp_path):
    builder = build(tmp_path, split_lists)
    assert builder.info.features["label"].names == ["Archery", "Bowling", "Zumba"]
    assert labels(builder, "train") == {"Archery/a1.avi": "Archery", "Bowling/b1.mp4": "Bowling"}
    assert labels(builder, "test") == {"Archery/a2.avi": "Archery", "Bowling/b2.mp4": "Bowling"}
    report = builder.build_reports["train"]
    assert (report.rows, report.written) == (5, 2)
    assert report.missing == ["Zumba/gone.avi"]
    assert list(report.undecodable) == ["Bowling/bad.mp4"]
    assert report.invalid == {
        "train.txt line 6": "'lonely.avi' has no class folder (<class>/<video>)"
    }
    assert report.duplicates == ["train.txt line 7 (the video of train.txt line 1)"]
    assert saved_report(builder)["train"]["missing"] == ["Zumba/gone.avi"]
    assert set(builder.info.splits) == {"train", "test"}


def test_video_folder_multilabel_csv_gives_sorted_class_indices(tmp_path):
    root = tmp_path / "ml"
    for i, name in enumerate(["a.mp4", "b.mp4", "c.mp4", "d.mp4", "e.mp4"]):
        write_clip(root / "clips" / name, 3, seed=i)
    ann = root / "annotations"
    ann.mkdir()
    (ann / "train.csv").write_text(
        "path,labels\n"
        "clips/a.mp4,running; jumping\n"
        "clips/b.mp4,sitting\n"
        "clips/c.mp4,\n"  # no label in a labelled split: a skip
        "clips/gone.mp4,zz top;running\n"  # missing: its labels are still classes
        "clips/a.mp4,sitting\n"
    )
    (ann / "val.csv").write_text('path,labels\nclips/d.mp4,"jumping;sitting;running;"\n')
    (ann / "test.csv").write_text("path,labels\nclips/e.mp4,\n")
    builder = build(tmp_path, root, config="multilabel_short32")
    meant = ["jumping", "running", "sitting", "zz top"]
    assert builder.info.features["labels"].feature.names == meant
    reread = tfds.builder("video_folder/multilabel_short32", data_dir=str(tmp_path / "tfds"))
    assert reread.info.features["labels"].feature.names == meant
    assert "label" not in builder.info.features
    train = raw_examples(builder, "train")
    assert list(train["clips/a.mp4"]["labels"].int64_list.value) == [0, 1]
    assert labels(builder, "train", "labels") == {
        "clips/a.mp4": ["jumping", "running"],
        "clips/b.mp4": ["sitting"],
    }
    assert labels(builder, "validation", "labels") == {
        "clips/d.mp4": ["jumping", "running", "sitting"]
    }
    assert labels(builder, "test", "labels") == {"clips/e.mp4": []}
    report = builder.build_reports["train"]
    assert report.invalid == {"train.csv line 4": "clips/c.mp4: no label (column labels is empty)"}
    assert report.missing == ["clips/gone.mp4"]
    assert report.duplicates == ["train.csv line 6 (the video of train.csv line 2)"]
    assert not builder.build_reports["test"].labelled


def test_video_folder_config_that_does_not_fit_the_folder_says_which_does(tmp_path, split_folders):
    root = tmp_path / "ml"
    write_clip(root / "x.mp4", 2)
    (root / "annotations").mkdir()
    (root / "annotations/train.csv").write_text("path,labels\nx.mp4,a\n")
    with pytest.raises(FileNotFoundError, match="build video_folder/multilabel_short32"):
        build(tmp_path, root)
    with pytest.raises(FileNotFoundError, match="build video_folder/short32"):
        build(tmp_path, split_folders, config="multilabel_short32")


def test_video_folder_val_and_validation_both_is_an_error(tmp_path):
    write_clip(tmp_path / "m/val/a/x.mp4", 2)
    write_clip(tmp_path / "m/validation/a/y.mp4", 2)
    with pytest.raises(ValueError, match="both validation/ and val/ hold the validation split"):
        build(tmp_path, tmp_path / "m")


def test_hmdb51_split_lists_make_layout_b(tmp_path):
    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    (splits / "brush_hair_test_split1.txt").write_text("b1.avi 1 \nb2.avi 2 \nb3.avi 0 \n")
    (splits / "brush_hair_test_split2.txt").write_text("b1.avi 2 \n")
    (splits / "shoot_ball_test_split1.txt").write_text("s1.avi 1\r\n\r\ns2.avi 2\r\n")
    out = tmp_path / "hmdb51"
    assert video_folder.hmdb51_split_lists(str(splits), str(out), split=1) == {
        "train": 2,
        "test": 2,
    }
    assert (out / "splits/train.txt").read_text() == "brush_hair/b1.avi\nshoot_ball/s1.avi\n"
    assert (out / "splits/test.txt").read_text() == "brush_hair/b2.avi\nshoot_ball/s2.avi\n"
    (splits / "shoot_ball_test_split1.txt").write_text("s1.avi train\n")
    with pytest.raises(ValueError, match="shoot_ball_test_split1.txt line 1: 's1.avi train'"):
        video_folder.hmdb51_split_lists(str(splits), str(out))


def test_video_folder_cli_builds_layout_b_and_writes_the_report(split_lists, tmp_path, capsys):
    build_lib.main(
        [
            "--dataset=video_folder",
            "--config=short32",
            f"--manual_dir={split_lists}",
            f"--data_dir={tmp_path}",
        ]
    )
    out = capsys.readouterr().out
    assert "split train: wrote 2 of 5 annotated videos." in out
    assert "skipped 1 missing files: Zumba/gone.avi" in out
    assert "Skipped-file report: " in out and "video_folder/short32/1.0.0" in out


@pytest.mark.parametrize(
    "name, registered_as",
    [
        ("video_folder", "VideoFolder"),
        ("epic_kitchens_100", "EpicKitchens100"),
        ("moments_in_time", "MomentsInTime"),
    ],
)
def test_new_builders_are_registered_listed_and_suggested(name, registered_as):
    assert tfds.builder_cls(name).__name__ == registered_as
    assert name in names.DATASETS
    names.check_buildable(f"{name}/short32")
    with pytest.raises(names.UnknownDatasetError, match=f"Did you mean {name}"):
        names.check_buildable(name.replace("_", "-") + "x")
