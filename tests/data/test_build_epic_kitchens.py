"""epic_kitchens_100: segments cut by their timestamps from videos decoded once, with the faults
of real annotations (segments past the end, zero-length, missing and broken videos)."""

from fractions import Fraction

import pytest
import tensorflow_datasets as tfds

from tests.data.video_fixtures import frame_index, index_clip, raw_examples, saved_report
from vivit_jax.data import build as build_lib
from vivit_jax.data.builders import epic_kitchens, segments

HEADER = (
    "narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,"
    "start_frame,stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes\n"
)
VERBS = ["take", "put", "wash", "open"]
NOUNS = ["tap", "plate", "cupboard"]
NTSC = Fraction(30000, 1001)


def row(nid, start, stop, verb=0, noun=0, frames=(0, 0)):
    pid, vid = nid.split("_")[0], "_".join(nid.split("_")[:2])
    return (
        f"{nid},{pid},{vid},{start},{start},{stop},{frames[0]},{frames[1]},take tap,take,"
        f"{verb},tap,{noun},\"['tap']\",[{noun}]\n"
    )


@pytest.fixture(scope="module")
def epic(tmp_path_factory):
    root = tmp_path_factory.mktemp("epic")
    ann = root / "epic-kitchens-100-annotations"
    ann.mkdir()
    (ann / "EPIC_100_verb_classes.csv").write_text(
        "id,key,instances,category\n"
        + "".join(f"{i},{v},\"['{v}']\",x\n" for i, v in enumerate(VERBS))
    )
    (ann / "EPIC_100_noun_classes.csv").write_text(
        "id,key,instances,category\n" + "".join(f"{i},{n},[],x\n" for i, n in enumerate(NOUNS))
    )
    index_clip(root / "P01/videos/P01_01.MP4", 60, NTSC)  # 2.002 s at 29.97 fps
    index_clip(root / "P02/videos/P02_01.mp4", 30, Fraction(60000, 1001))  # 59.94 fps
    (root / "P03/videos").mkdir(parents=True)
    (root / "P03/videos/P03_01.MP4").write_bytes(b"\x00\x01" * 500)
    # start_frame/stop_frame as EPIC writes them (nominal 60 fps), twice what 29.97 fps holds.
    train = [
        row("P01_01_0", "00:00:00.50", "00:00:01.00", 1, 2, frames=(30, 60)),
        row("P01_01_1", "00:00:00.80", "00:00:01.20", 2, 1, frames=(48, 72)),
        row("P01_01_2", "00:00:01.80", "00:00:03.00", 3, 0),  # past the end: clipped
        row("P01_01_3", "00:00:01.00", "00:00:01.00"),  # zero-length
        row("P01_01_4", "00:00:05.00", "00:00:06.00"),  # after the end
        row("P01_01_5", "00:00:01.001", "00:00:01.101"),  # starts exactly on frame 30
        row("P01_01_6", "00:00:00.010", "00:00:00.020"),  # between two frames
        row("P02_01_0", "00:00:00.00", "00:00:00.25", 0, 1),
        row("P02_02_0", "00:00:00.00", "00:00:01.00"),  # no such video
        row("P03_01_0", "00:00:00.00", "00:00:01.00"),  # undecodable
        row("P01_01_7", "00:00:00.00", "00:00:00.50", 97, 0),  # verb out of range
        row("P01_01_8", "0:0:1", "00:00:01.50"),  # fields without leading zeros
        row("P01_01_9", "00:00:aa", "00:00:01.50"),
        row("P01_01_0", "00:00:00.50", "00:00:01.00"),  # repeated
    ]
    (ann / "EPIC_100_train.csv").write_text(HEADER + "".join(train))
    (ann / "EPIC_100_validation.csv").write_text(
        HEADER + row("P02_01_1", "00:00:00.10", "00:00:00.20", 2, 2)
    )
    (ann / "EPIC_100_test_timestamps.csv").write_text(
        "narration_id,participant_id,video_id,start_timestamp,stop_timestamp,start_frame,"
        "stop_frame\nP02_01_2,P02,P02_01,00:00:00.00,00:00:00.10,1,7\n"
    )
    tfds_dir = tmp_path_factory.mktemp("tfds")
    builder = build_lib.build(
        "epic_kitchens_100/short32", data_dir=str(tfds_dir), manual_dir=str(root), num_workers=2
    )
    return builder, str(tfds_dir)


def frames_of(builder, split):
    return {
        ex["narration_id"].decode(): ex
        for ex in tfds.as_numpy(
            builder.as_dataset(split=split, decoders={"video": tfds.decode.SkipDecoding()})
        )
    }


def test_epic_segments_are_cut_by_timestamps_not_frame_numbers(epic):
    builder, _ = epic
    train = frames_of(builder, "train")
    assert sorted(train) == ["P01_01_0", "P01_01_1", "P01_01_2", "P01_01_5", "P01_01_8", "P02_01_0"]
    expected = {  # first and last frame index k, t_k = k / fps
        "P01_01_0": (15, 29),  # [0.5, 1.0) at 29.97 fps; start_frame/stop_frame say 30..59
        "P01_01_1": (24, 35),  # overlaps _0: frames are shared
        "P01_01_2": (54, 59),  # clipped at the video's end
        "P01_01_5": (30, 32),  # 1.001 s is frame 30 exactly
        "P01_01_8": (30, 44),
        "P02_01_0": (0, 14),  # [0, 0.25) at 59.94 fps
    }
    for nid, (first, last) in expected.items():
        video = train[nid]["video"]
        assert len(video) == last - first + 1, nid
        assert [frame_index(video[0]), frame_index(video[-1])] == [first, last], nid
    assert train["P01_01_0"]["fps"] == pytest.approx(29.97, abs=1e-3)
    assert train["P02_01_0"]["fps"] == pytest.approx(59.94, abs=1e-3)
    assert train["P02_01_0"]["video_id"] == b"P02_01"


def test_epic_labels_are_verb_and_noun_indices_with_names(epic):
    builder, tfds_dir = epic
    reread = tfds.builder("epic_kitchens_100/short32", data_dir=tfds_dir)
    assert reread.info.features["verb_label"].names == VERBS
    assert reread.info.features["noun_label"].names == NOUNS
    stored = raw_examples(builder, "train", key="narration_id")
    labels = {
        nid: (f["verb_label"].int64_list.value[0], f["noun_label"].int64_list.value[0])
        for nid, f in stored.items()
    }
    assert labels["P01_01_0"] == (VERBS.index("put"), NOUNS.index("cupboard"))
    assert labels["P01_01_1"] == (2, 1) and labels["P02_01_0"] == (0, 1)
    validation = raw_examples(builder, "validation", key="narration_id")
    assert validation["P02_01_1"]["verb_label"].int64_list.value[0] == 2
    test = raw_examples(builder, "test", key="narration_id")
    assert [test["P02_01_2"][k].int64_list.value[0] for k in ("verb_label", "noun_label")] == [
        -1,
        -1,
    ]
    assert not builder.build_reports["test"].labelled
    assert len(frames_of(builder, "test")["P02_01_2"]["video"]) == 6  # [0, 0.1) at 59.94 fps


def test_epic_report_counts_and_names_every_skip(epic):
    builder, _ = epic
    report = builder.build_reports["train"]
    assert (report.rows, report.written) == (13, 6)
    assert report.missing == ["P02_02_0 (P02/videos/P02_02.MP4)"]
    assert list(report.undecodable) == ["P03_01_0 (P03/videos/P03_01.MP4)"]
    assert report.invalid == {
        "EPIC_100_train.csv line 5": "stop_timestamp 00:00:01.00 is not after start_timestamp "
        "00:00:01.00 (a zero-length segment)",
        "EPIC_100_train.csv line 6": "start_timestamp 00:00:05.00 is after the video's end at "
        "2.002 s",
        "EPIC_100_train.csv line 8": "no frame from 00:00:00.010 to 00:00:00.020",
        "EPIC_100_train.csv line 12": "column verb_class: '97' is not a class index (0..3)",
        "EPIC_100_train.csv line 14": "column start_timestamp: '00:00:aa' is not HH:MM:SS.ff",
    }
    assert report.clipped == {
        "P01_01_2 (P01/videos/P01_01.MP4)": "stop 00:00:03.00 is after the video's end at 2.002 s"
    }
    assert report.duplicates == [
        "EPIC_100_train.csv line 15 (the segment of EPIC_100_train.csv line 2)"
    ]
    saved = saved_report(builder)["train"]
    assert saved["invalid"] == report.invalid and saved["clipped"] == report.clipped


def cut(path, spans, **kwargs):
    """decode_segments on (start, stop) spans in seconds → {key: (frame indices, problem)}."""
    segs = [
        segments.Segment(f"s{i}", path, 0, start=Fraction(a), stop=Fraction(b))
        for i, (a, b) in enumerate(spans)
    ]
    out = segments.decode_segments(path, segs, 32, 90, **kwargs)
    return {
        seg.key: ([frame_index(f) for f in video.frames] if video else [], problem)
        for seg, video, problem, _ in out
    }


@pytest.fixture
def decoded(monkeypatch):
    """Counts the frames decode_segments decodes and the files it opens; lists its seeks (the
    pts asked for; `seen["shift"]` is added to it, as an inexact index would)."""
    seen = {"frames": 0, "opened": 0, "seeks": [], "shift": 0}
    frame_time, open_, seek = segments._frame_time, segments.av.open, segments._seek

    def recording_seek(container, stream, pts):
        seen["seeks"].append(pts)
        seek(container, stream, pts + seen["shift"] if pts else 0)

    def counting_time(*args):
        seen["frames"] += 1
        return frame_time(*args)

    def counting_open(path, *args, **kwargs):
        seen["opened"] += not args and not kwargs  # for reading
        return open_(path, *args, **kwargs)

    monkeypatch.setattr(segments, "_frame_time", counting_time)
    monkeypatch.setattr(segments.av, "open", counting_open)
    monkeypatch.setattr(segments, "_seek", recording_seek)
    return seen


def test_segments_of_a_video_are_cut_in_one_pass_sharing_frames(tmp_path, decoded):
    path = index_clip(tmp_path / "v.mp4", 40, NTSC)
    spans = [(Fraction(i, 10), Fraction(i + 5, 10)) for i in range(8)]
    segs = [segments.Segment(f"s{i}", path, 0, start=a, stop=b) for i, (a, b) in enumerate(spans)]
    out = {s.key: v for s, v, _, _ in segments.decode_segments(path, segs, 32, 90)}
    assert (decoded["opened"], decoded["frames"]) == (1, 37)  # To the frame after the last stop.
    assert [frame_index(f) for f in out["s1"].frames] == list(range(3, 18))  # [0.1, 0.6)
    assert out["s0"].frames[3] is out["s1"].frames[0]  # frame 3, encoded once


def test_segments_far_apart_are_reached_by_seeking(tmp_path, decoded):
    path = index_clip(tmp_path / "v.mp4", 300, NTSC, gop=15)  # 10 s, a key frame each 0.5 s
    got = cut(path, [(Fraction(1, 10), Fraction(3, 10)), (Fraction(9), Fraction(91, 10))])
    assert got == {"s0": (list(range(3, 9)), None), "s1": (list(range(270, 273)), None)}
    assert decoded["seeks"] == [9 * 30000]  # pts in 1/30000 s
    assert decoded["frames"] < 60  # not the 273 up to the second segment


def test_segments_after_a_seek_that_overshoots_come_from_reading_again(tmp_path, decoded):
    path = index_clip(tmp_path / "v.mp4", 300, NTSC, gop=15)
    decoded["shift"] = 30000  # Every seek lands 1 s late.
    got = cut(path, [(Fraction(1, 10), Fraction(3, 10)), (Fraction(6), Fraction(61, 10))])
    assert got == {"s0": (list(range(3, 9)), None), "s1": (list(range(180, 183)), None)}
    assert decoded["seeks"] == [6 * 30000, 0]  # then from the start, without seeking again


def test_segments_with_key_frames_too_far_apart_stop_seeking(tmp_path, decoded):
    path = index_clip(tmp_path / "v.mp4", 300, NTSC, gop=600)  # one key frame, at 0
    spans = [(0, Fraction(1, 10)), (5, Fraction(51, 10)), (Fraction(95, 10), Fraction(96, 10))]
    got = cut(path, spans)
    assert got["s1"] == (list(range(150, 153)), None)
    assert got["s2"] == (list(range(285, 288)), None)
    assert decoded["seeks"] == [5 * 30000]  # It landed at 0, so no more seeks.


def test_epic_classes_csv_with_a_gap_is_an_error(tmp_path):
    path = tmp_path / "EPIC_100_verb_classes.csv"
    path.write_text("id,key\n0,take\n2,put\n")
    with pytest.raises(ValueError, match="the ids are not 0..1"):
        epic_kitchens.read_classes(str(path))
