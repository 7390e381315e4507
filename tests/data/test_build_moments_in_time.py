"""moments_in_time: labels are the categories file's indices; class names with commas; dirty
rows are counted skips."""

import os

import pytest

from tests.data.video_fixtures import raw_examples, saved_report, write_clip
from vivit_jax.data import build as build_lib
from vivit_jax.data.builders import moments_in_time

# Index order is not alphabetical: the labels must be these indices, not renumbered.
CATEGORIES = "opening,0\ncutting, chopping,1\nadult+female+singing,2\n"


@pytest.fixture(scope="module")
def mit(tmp_path_factory):
    root = tmp_path_factory.mktemp("mit")
    (root / "moments_categories.txt").write_bytes(CATEGORIES.replace("\n", "\r\n").encode())
    write_clip(root / "training/opening/o1.mp4", 4, fps=30)
    write_clip(root / "training/opening/o2.mp4", 3, seed=1)
    write_clip(root / "training/cutting, chopping/c1.mp4", 4, seed=2)
    write_clip(root / "training/cutting, chopping/c2.mp4", 4, seed=3)
    write_clip(root / "training/adult+female+singing/s1.mp4", 4, seed=4)
    (root / "training/adult+female+singing/bad.mp4").write_bytes(os.urandom(1000))
    (root / "trainingSet.csv").write_text(
        "opening/o1.mp4,opening,3,0\n"
        "opening/o2.mp4,opening,2,1\n"
        "cutting, chopping/c1.mp4,cutting, chopping,3,0\n"  # unquoted commas
        '"cutting, chopping/c2.mp4","cutting, chopping",3,0\n'
        "adult+female+singing/s1.mp4,adult+female+singing,3,0\n"
        "adult+female+singing/bad.mp4,adult+female+singing,3,0\n"
        "opening/gone.mp4,opening,3,0\n"
        "opening/x.mp4,closing,3,0\n"
        "justonefield\n"
        "opening/o1.mp4,opening,3,0\n"
    )
    write_clip(root / "validation/opening/v1.mp4", 3, seed=5)
    write_clip(root / "validation/cutting, chopping/v2.mp4", 3, seed=6)
    (root / "validationSet.csv").write_text(
        "opening/v1.mp4,opening,3,0\ncutting, chopping/v2.mp4,cutting, chopping,2,1\n"
    )
    tfds_dir = tmp_path_factory.mktemp("tfds")
    return build_lib.build(
        "moments_in_time/short32", data_dir=str(tfds_dir), manual_dir=str(root), num_workers=2
    )


def labels(builder, split):
    return {vid: f["label"].int64_list.value[0] for vid, f in raw_examples(builder, split).items()}


def test_moments_in_time_labels_are_the_category_indices(mit):
    assert mit.info.features["label"].names == [
        "opening",
        "cutting, chopping",
        "adult+female+singing",
    ]
    assert labels(mit, "train") == {
        "opening/o1.mp4": 0,
        "opening/o2.mp4": 0,
        "cutting, chopping/c1.mp4": 1,
        "cutting, chopping/c2.mp4": 1,
        "adult+female+singing/s1.mp4": 2,
    }
    assert labels(mit, "validation") == {"opening/v1.mp4": 0, "cutting, chopping/v2.mp4": 1}
    stored = raw_examples(mit, "train")["opening/o1.mp4"]
    assert len(stored["video"].bytes_list.value) == 4
    assert stored["fps"].float_list.value[0] == pytest.approx(30)


def test_moments_in_time_report_names_every_skip(mit):
    report = mit.build_reports["train"]
    assert (report.rows, report.written) == (9, 5)
    assert list(report.undecodable) == ["adult+female+singing/bad.mp4"]
    assert report.missing == ["opening/gone.mp4"]
    assert report.invalid == {
        "trainingSet.csv line 8": "opening/x.mp4: class 'closing' is not in moments_categories.txt",
        "trainingSet.csv line 9": "not '<class>/<file>,<class>,<agreement>,<disagreement>': "
        "['justonefield']",
    }
    assert report.duplicates == ["trainingSet.csv line 10 (the video of trainingSet.csv line 1)"]
    assert saved_report(mit)["train"]["missing"] == ["opening/gone.mp4"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("opening,0\nclosing,2\n", "the indices are not 0..1"),
        ("opening,0\nclosing\n", "line 2: 'closing' is not '<name>,<index>'"),
        ("opening,0\nopening,1\n", "line 2: 'opening,1' repeats moments_categories.txt line 1"),
    ],
)
def test_moments_in_time_bad_categories_file_says_which_line(tmp_path, text, message):
    path = tmp_path / "moments_categories.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        moments_in_time.read_categories(str(path))
