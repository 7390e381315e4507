"""Builds from dirty annotations: every bad row is a counted skip naming file, row and column.

Each test writes a tiny Kinetics or SSv2 copy with real encoded clips and builds it.
"""

import json
import os
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds

from tests.data.conftest import clip_frames
from vivit_jax.data import build as build_lib
from vivit_jax.data import sources
from vivit_jax.data.sources import TfdsSource
from vivit_jax.data.video_io import write_video

HEADER = "label,youtube_id,time_start,time_end,split\n"


def clip(ytid: str, start: int = 0) -> str:
    return f"{ytid}_{start:06d}_{start + 10:06d}"


def kinetics_copy(root, csvs: dict[str, str], encoding: str = "utf-8", size=(48, 64)) -> str:
    """Writes annotations/<name> for each CSV text and a clip for every youtube_id in it."""
    ann = root / "annotations"
    ann.mkdir(parents=True)
    for name, text in csvs.items():
        (ann / name).write_text(text, encoding=encoding)
        folder = root / {"train.csv": "train", "val.csv": "val", "test.csv": "test"}[name]
        folder.mkdir(exist_ok=True)
        for n, line in enumerate(text.splitlines()[1:]):
            fields = line.split(",")
            ytid = next((f for f in fields if f.startswith("yt")), None)
            if ytid is not None:
                frames = clip_frames(4, size[0], size[1], n)
                write_video(str(folder / f"{clip(ytid)}.mp4"), frames, fps=10)
    return str(root)


def build_kinetics(tmp_path, manual, config="short32"):
    return build_lib.build(
        f"kinetics400/{config}",
        data_dir=str(tmp_path / "tfds"),
        manual_dir=manual,
        num_workers=2,
    )


def labels_by_id(builder, split):
    src = TfdsSource(builder, split)
    return {src.get(i)[2]: src.get(i)[1][0] for i in range(src.num_examples)}


def saved_report(builder):
    with open(os.path.join(builder.data_dir, "build_report.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize("bom_in", ["train.csv", "val.csv"])
def test_build_kinetics_csv_with_byte_order_mark(tmp_path, bom_in):
    train = HEADER + "abseiling,ytA0,0,10,train\nbowling,ytB0,0,10,train\n"
    val = HEADER + "bowling,ytV0,0,10,validate\nabseiling,ytV1,0,10,validate\n"
    manual = kinetics_copy(tmp_path / "k", {"train.csv": train, "val.csv": val})
    path = os.path.join(manual, "annotations", bom_in)
    text = open(path, encoding="utf-8").read()
    with open(path, "w", encoding="utf-8-sig") as f:  # What "CSV UTF-8" exports write.
        f.write(text)
    builder = build_kinetics(tmp_path, manual)
    assert builder.info.features["label"].names == ["abseiling", "bowling"]
    assert labels_by_id(builder, "train") == {clip("ytA0"): 0, clip("ytB0"): 1}
    assert labels_by_id(builder, "validation") == {clip("ytV0"): 1, clip("ytV1"): 0}


def test_build_ssv2_files_with_byte_order_mark(tmp_path):
    root = tmp_path / "ssv2"
    labels, videos = root / "labels", root / "videos"
    labels.mkdir(parents=True)
    videos.mkdir()
    for vid in ("1", "2", "3"):
        write_video(str(videos / f"{vid}.webm"), clip_frames(4, 48, 64, int(vid)), fps=12)

    def put(name, obj):
        text = obj if isinstance(obj, str) else json.dumps(obj)
        (labels / name).write_text(text, encoding="utf-8-sig")

    put("something-something-v2-labels.json", {"Holding something": "0", "Moving something": "1"})
    put("something-something-v2-train.json", [{"id": "1", "template": "Holding [something]"}])
    put("something-something-v2-validation.json", [{"id": "2", "template": "Moving [something]"}])
    put("something-something-v2-test.json", [{"id": "3"}])
    put("test-answers.csv", "3;Moving something\n")
    builder = build_lib.build("something_something_v2/short32", str(tmp_path / "t"), str(root))
    assert labels_by_id(builder, "train") == {"1": 0}
    assert labels_by_id(builder, "validation") == {"2": 1}
    assert labels_by_id(builder, "test") == {"3": 1}


def test_build_empty_label_is_a_skip_and_a_split_without_labels_is_unlabelled(tmp_path, capsys):
    train = HEADER + "abseiling,ytA0,0,10,train\n,ytE0,0,10,train\nbowling,ytB0,0,10,train\n"
    test = HEADER + ",ytT0,0,10,test\n  ,ytT1,0,10,test\n"  # Kinetics' test.csv: no labels.
    manual = kinetics_copy(tmp_path / "k", {"train.csv": train, "test.csv": test})
    builder = build_kinetics(tmp_path, manual)
    assert labels_by_id(builder, "train") == {clip("ytA0"): 0, clip("ytB0"): 1}
    report = builder.build_reports["train"]
    assert (report.rows, report.written) == (3, 2)
    assert report.invalid == {
        "train.csv line 3": f"{clip('ytE0')}: no label (column label is empty)"
    }
    assert labels_by_id(builder, "test") == {clip("ytT0"): -1, clip("ytT1"): -1}
    assert not builder.build_reports["test"].labelled
    out = capsys.readouterr().out
    assert "split test: wrote 2 of 2 annotated videos. The split is unlabelled" in out
    assert "train.csv line 3" in out
    assert saved_report(builder)["train"]["invalid"] == report.invalid


@pytest.mark.parametrize(
    "train, why",
    [
        ("youtube_id,time_start,time_end\nytA0,0,10\n", "it has no 'label' column"),
        (HEADER + ",ytA0,0,10,train\n", "every row's label is empty"),
    ],
)
def test_build_train_without_labels_says_why(tmp_path, train, why):
    manual = kinetics_copy(tmp_path / "k", {"train.csv": train})
    with pytest.raises(ValueError, match=f"train.csv: the train split needs labels, but {why}"):
        build_kinetics(tmp_path, manual)


def test_build_split_without_usable_rows_is_left_out(tmp_path, capsys):
    train = HEADER + "abseiling,ytA0,0,10,train\n"
    val = HEADER + "abseiling,ytV0,0,10,validate\nnot a class,ytV1,0,10,validate\n"
    manual = kinetics_copy(tmp_path / "k", {"train.csv": train, "val.csv": val})
    os.remove(os.path.join(manual, "val", f"{clip('ytV0')}.mp4"))
    builder = build_kinetics(tmp_path, manual)
    assert set(builder.info.splits) == {"train"}
    report = saved_report(builder)["validation"]
    assert (report["built"], report["missing"]) == (False, [f"{clip('ytV0')}.mp4"])
    assert report["invalid"] == {
        "val.csv line 3": f"{clip('ytV1')}: label 'not a class' is not a train class"
    }
    assert "split validation: not built: none of its 2 rows can be used." in capsys.readouterr().out


def test_build_label_with_line_break_keeps_the_class_list(tmp_path):
    train = (
        HEADER + '"cutting\nchopping",ytA0,0,10,train\n'
        "abseiling,ytB0,0,10,train\n"
        '"playing\tguitar",ytC0,0,10,train\n'
        "zumba,ytD0,0,10,train\n"
    )
    val = HEADER + '"cutting  chopping",ytV0,0,10,validate\n'
    manual = kinetics_copy(tmp_path / "k", {"train.csv": train, "val.csv": val})
    built = build_kinetics(tmp_path, manual)
    meant = ["abseiling", "cutting chopping", "playing guitar", "zumba"]
    names = tfds.builder("kinetics400/short32", data_dir=str(tmp_path / "tfds")).info
    assert names.features["label"].names == meant  # Read back from the files, count included.
    assert labels_by_id(built, "train")[clip("ytA0")] == 1
    assert labels_by_id(built, "validation") == {clip("ytV0"): 1}
    assert built.build_reports["train"].normalised == {
        "cutting\nchopping": "cutting chopping",
        "playing\tguitar": "playing guitar",
    }
    assert built.build_reports["validation"].normalised == {"cutting  chopping": "cutting chopping"}


def test_build_bad_numbers_are_skips_naming_file_line_and_column(tmp_path):
    train = (
        HEADER + "abseiling,ytA0,0,10,train\n"
        "abseiling,ytA1,abc,10,train\n"
        "bowling,ytB0,0,10,train\n"
        "bowling,ytB1,0,nan,train\n"
        "bowling,ytB2,0\n"
        '"a\nb",,0,10,train\n'
        "bowling,ytB0,0,10,train\n"
    )
    manual = kinetics_copy(tmp_path / "k", {"train.csv": train})
    builder = build_kinetics(tmp_path, manual)
    assert set(labels_by_id(builder, "train")) == {clip("ytA0"), clip("ytB0")}
    report = builder.build_reports["train"]
    assert report.invalid == {
        "train.csv line 3": "column time_start: 'abc' is not a number",
        "train.csv line 5": "column time_end: 'nan' is not a time in seconds",
        "train.csv line 6": "column time_end: missing (the row is shorter than the header)",
        "train.csv line 7": "column youtube_id: empty",
    }
    assert report.duplicates == ["train.csv line 9 (the clip of train.csv line 4)"]
    assert (report.rows, report.written) == (6, 2)
    assert saved_report(builder)["train"]["invalid"] == report.invalid
    # The skipped rows' labels are still classes: DeepMind's indices count every train label.
    assert builder.info.features["label"].names == ["a b", "abseiling", "bowling"]


def test_build_ssv2_bad_entries_are_skips_naming_the_entry(tmp_path):
    root = tmp_path / "ssv2"
    labels, videos = root / "labels", root / "videos"
    labels.mkdir(parents=True)
    videos.mkdir()
    for vid in ("1", "2", "3", "4", "5"):
        write_video(str(videos / f"{vid}.webm"), clip_frames(4, 48, 64, int(vid)), fps=12)
    label_map = {"Holding something": "0", "Moving something": "1"}
    (labels / "something-something-v2-labels.json").write_text(json.dumps(label_map))
    train = [
        {"id": "1", "template": "Holding [something]"},
        {"template": "Holding [something]"},
        "2",
        {"id": ["2"], "template": "Holding [something]"},
        {"id": "3", "template": 7},
        {"id": "4"},
        {"id": 5, "template": "Moving [something]"},
        {"id": "", "template": "Moving [something]"},
        {"id": "1", "template": "Holding [something]"},
    ]
    (labels / "something-something-v2-train.json").write_text(json.dumps(train))
    builder = build_lib.build("something_something_v2/short32", str(tmp_path / "t"), str(root))
    assert labels_by_id(builder, "train") == {"1": 0, "5": 1}
    report = builder.build_reports["train"]
    f = "something-something-v2-train.json"
    assert report.invalid == {
        f"{f}[1]": "no 'id'",
        f"{f}[2]": "not a JSON object but str '2'",
        f"{f}[3]": "key id: ['2'] is not a string or integer",
        f"{f}[4]": "3: key template: 7 is not a string",
        f"{f}[5]": "4: no label (no template)",
        f"{f}[7]": "key id: empty",
    }
    assert report.duplicates == [f"{f}[8] (the video of {f}[0])"]


def test_build_frames_too_large_for_jpeg_are_a_skip_that_says_so(tmp_path):
    train = HEADER + "abseiling,ytA0,0,10,train\nbowling,ytB0,0,10,train\n"
    manual = kinetics_copy(tmp_path / "k", {"train.csv": train})
    wide = os.path.join(manual, "train", f"{clip('ytB0')}.mp4")
    write_video(wide, clip_frames(2, 10, 10000, 0), fps=10)  # 10x10000 → 256x256000 at short256.
    builder = build_kinetics(tmp_path, manual, config="short256")
    report = builder.build_reports["train"]
    assert report.written == 1
    assert report.undecodable == {
        f"{clip('ytB0')}.mp4": "frames of 10x10000 resized to short side 256 would be 256x256000, "
        "beyond JPEG's limit of 65535 pixels per side; build with a short side of at "
        "most 65 (--config=short<N>) or --config=original"
    }


def test_build_unknown_dataset_name_is_a_short_message(tmp_path):
    with pytest.raises(ValueError) as raised:
        sources._prepared("kinetics401", str(tmp_path))
    message = str(raised.value)
    assert len(message.splitlines()) <= 3, message
    assert "config.dataset_name='kinetics401' is not a known dataset" in message
    assert "Did you mean kinetics400" in message and "video_tfrecord_dataset" in message
    assert "abstract_reasoning" not in message  # TFDS's catalogue.
    with pytest.raises(ValueError, match="Did you mean something_something_v2"):
        sources._prepared("ssv2", str(tmp_path))


@pytest.mark.parametrize(
    "dataset, said",
    [
        ("kinetcs400", "Did you mean kinetics400?"),
        ("mnist", "'mnist' is not a known dataset"),  # In TFDS's catalogue, not ours: no download.
        ("kinetics400/short999", "kinetics400 has no config 'short999'"),
        ("video_tfrecord_dataset", "DMVR records are not built here"),
    ],
)
def test_build_cli_unknown_dataset_exits_without_traceback(tmp_path, capsys, dataset, said):
    with pytest.raises(SystemExit) as exited:
        build_lib.main([f"--dataset={dataset}", f"--data_dir={tmp_path}"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert said in err and len(err.splitlines()) <= 3, err
    assert not os.listdir(tmp_path)


def test_build_cli_unknown_dataset_in_a_real_process(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "vivit_jax.data.build",
            "--dataset=kinetic400",
            f"--data_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "Did you mean kinetics400" in done.stderr and "abstract_reasoning" not in done.stderr
