"""Many segments of one video cut in one pass; many videos cut on threads.

`decode_segments` reads a video in order and gives each segment the frames whose presentation
time t (from the stream's start) has `start <= t < stop`. A frame inside some segment is resized
and JPEG-encoded once and shared by every segment holding it; a segment is handed out as soon as
the stream passes its stop; decoding ends after the last segment. Where no segment is open and
the next one starts more than `SEEK_GAP` seconds later, it seeks there (to the key frame before
it) rather than decode the gap; if that seek lands before the frames already read (key frames
too far apart) it stops seeking in that video, and if it lands after the time asked for (an
inexact index) it reads the video from its start instead, so that no frame is lost.

Why one pass rather than a seek to each segment's start: EPIC-KITCHENS' segments are dense and
overlap, and a seek per segment decodes every overlap and each seek's lead-in from the key frame
again and encodes the shared frames again. Measured on a 40 s 854x480 59.94 fps h264 video with
a key frame every 2 s, short side 256, on 2 shared CPU cores (several runs): dense overlapping
segments (57 s of segments in 40 s of video, as EPIC's): one pass 20-26 s, a seek per segment
27-38 s; sparse segments (14 s in 40 s): one pass 7 s (10 s without the gap seeks), a seek per
segment 5-8 s.
"""

from __future__ import annotations

import collections
import dataclasses
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction

import av

from vivit_jax.data import video_io
from vivit_jax.data.builders.common import Row

# Seconds without any segment worth a seek rather than decoding them.
SEEK_GAP = Fraction(4)


@dataclasses.dataclass
class Segment(Row):
    """A row that is a part of its video: `start`/`stop` in seconds, as written in
    `start_text`/`stop_text` (for the report)."""

    start: Fraction = Fraction(0)
    stop: Fraction = Fraction(0)
    start_text: str = ""
    stop_text: str = ""


Result = tuple[Segment, "video_io.DecodedVideo | None", "str | None", "str | None"]


def decode_segments(
    path: str,
    segments: list[Segment],
    short_side: int | None,
    jpeg_quality: int,
    stop: threading.Event | None = None,
) -> Iterator[Result]:
    """Cuts `segments` out of the video at `path`, decoding it once.

    Yields (segment, frames, problem, clipped) for each segment, in the order they end: `problem`
    is None (to be written), 'invalid' (the segment's `problem` says why: it holds no frame, or
    starts after the video's end) or why the video could not be decoded; `clipped` says how a
    segment that runs past the video's end was cut (its frames up to the end are kept), or is
    None. Stops early once `stop` is set.
    """
    try:
        container = av.open(path)
    except Exception as e:  # noqa: BLE001 - PyAV raises many FFmpeg error types.
        for seg in segments:
            yield seg, None, f"cannot open ({type(e).__name__}: {e})", None
        return
    try:
        if not container.streams.video:
            for seg in segments:
                yield seg, None, "no video stream", None
            return
        yield from _cut(container, segments, short_side, jpeg_quality, stop)
    finally:
        container.close()


class _Cutter:
    """The segments of one video not yet handed out, and the frames of the open ones."""

    def __init__(self, segments, fps: float, short_side: int | None, jpeg_quality: int):
        self.todo = collections.deque(sorted(segments, key=lambda s: (s.start, s.stop, s.key)))
        self.active: list[Segment] = []
        self.frames: dict[str, list[bytes]] = {}
        self.fps, self.short_side, self.jpeg_quality = fps, short_side, jpeg_quality
        self.size = self.out_size = None

    def next_start(self) -> Fraction | None:
        """When the next segment starts, if none is open."""
        return self.todo[0].start if self.todo and not self.active else None

    def _done(self, seg, clipped=None, error=None) -> Result:
        frames = self.frames.pop(seg.key)
        return seg, video_io.DecodedVideo(frames, self.fps, self.size, error), None, clipped

    def add(self, t: Fraction, frame) -> Iterator[Result]:
        """Takes the frame at time `t`; yields the segments that ended before it."""
        for seg in [s for s in self.active if s.stop <= t]:
            self.active.remove(seg)
            yield self._done(seg)
        while self.todo and self.todo[0].start <= t:
            seg = self.todo.popleft()
            if seg.stop <= t:
                seg.problem = f"no frame from {seg.start_text} to {seg.stop_text}"
                yield seg, None, "invalid", None
            else:
                self.active.append(seg)
                self.frames[seg.key] = []
        if not self.active:
            return
        if self.size is None:
            self.size = (frame.height, frame.width)
            self.out_size = video_io.check_jpeg_size(frame.height, frame.width, self.short_side)
        height, width = self.out_size
        rgb = frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="BILINEAR")
        jpeg = video_io.encode_jpeg(rgb, self.jpeg_quality)
        for seg in self.active:
            self.frames[seg.key].append(jpeg)

    def finish(self, end: Fraction | None, error: str | None) -> Iterator[Result]:
        """The rest, once the stream ended at time `end` (or failed with `error`)."""
        for seg in self.active:
            clipped = None
            if error is None and seg.stop > end:
                clipped = f"stop {seg.stop_text} is after the video's end at {float(end):.3f} s"
            yield self._done(seg, clipped, error)
        for seg in self.todo:
            if error is not None:
                yield seg, None, f"a decode error before the segment ({error})", None
            elif end is None:
                yield seg, None, "no frames decoded", None
            else:
                seg.problem = (
                    f"start_timestamp {seg.start_text} is after the video's end at "
                    f"{float(end):.3f} s"
                )
                yield seg, None, "invalid", None

    def fail(self, problem: str) -> Iterator[Result]:
        for seg in self.active + list(self.todo):
            self.frames.pop(seg.key, None)
            yield seg, None, problem, None


def _frame_time(frame, base: int, time_base, index: int, rate) -> Fraction:
    if frame.pts is not None and time_base:
        return Fraction(frame.pts - base) * time_base
    return Fraction(index) / Fraction(rate) if rate else Fraction(index)


def _seek(container, stream, pts: int) -> None:
    """Seeks to the key frame at or before `pts` (stream time base)."""
    container.seek(pts, stream=stream, backward=True)


def _cut(container, segments, short_side, jpeg_quality, stop) -> Iterator[Result]:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    rate = stream.average_rate or stream.guessed_rate
    base = stream.start_time or 0
    cutter = _Cutter(segments, float(rate) if rate else 0.0, short_side, jpeg_quality)
    seen = target = None  # the last frame's time; the time a seek was asked to reach
    may_seek, index, error = True, 0, None
    try:
        while True:
            jump = None
            for frame in container.decode(stream):
                if stop is not None and stop.is_set():
                    return
                may_seek = may_seek and frame.pts is not None and bool(stream.time_base)
                t = _frame_time(frame, base, stream.time_base, index, rate)
                index += 1
                if target is not None:  # The first frame after a seek.
                    if t > target:  # Past frames it should not have skipped: start over.
                        may_seek, jump, target, index = False, Fraction(0), None, 0
                        break
                    may_seek = may_seek and t > seen  # Else key frames are too far apart.
                    target = None
                if seen is not None and t <= seen:
                    continue
                seen = t
                yield from cutter.add(t, frame)
                if not cutter.active and not cutter.todo:
                    return  # The rest of the video is in no segment.
                upcoming = cutter.next_start()
                if may_seek and upcoming is not None and upcoming - t > SEEK_GAP:
                    jump = target = upcoming
                    break
            if jump is None:
                break  # The end of the stream.
            _seek(container, stream, base + int(jump / stream.time_base) if jump else base)
    except video_io.VideoDecodeError as e:  # Frames too large for JPEG: nothing can be kept.
        yield from cutter.fail(str(e))
        return
    except Exception as e:  # noqa: BLE001 - keep what was decoded before the error.
        error = f"{type(e).__name__}: {e}"
    end = None if seen is None else seen + (1 / Fraction(rate) if rate else 0)
    yield from cutter.finish(end, error)


def parallel_streams(
    fn: Callable[[object, threading.Event], Iterable], items: Iterable, num_workers: int
) -> Iterator:
    """Everything the iterables `fn(item, stop)` yield, `num_workers` items at a time on threads.

    The order between items is not kept (TFDS orders examples by key); at most 2 * num_workers
    results wait to be consumed. An exception in `fn` is raised here. When the consumer stops
    (done, an error, an interrupt), `stop` is set and the threads are joined.
    """
    stop = threading.Event()
    if num_workers <= 1:
        for item in items:
            yield from fn(item, stop)
        return
    results: queue.Queue = queue.Queue(maxsize=2 * num_workers)
    pending, lock, finished = iter(items), threading.Lock(), object()

    def put(value) -> bool:
        while not stop.is_set():
            try:
                results.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            while not stop.is_set():
                with lock:
                    item = next(pending, finished)
                if item is finished:
                    break
                for value in fn(item, stop):
                    if not put((None, value)):
                        return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it.
            put((e, None))
        finally:
            put((finished, None))

    threads = [threading.Thread(target=work, daemon=True) for _ in range(num_workers)]
    for thread in threads:
        thread.start()
    try:
        running = len(threads)
        while running:
            error, value = results.get()
            if error is finished:
                running -= 1
            elif error is not None:
                raise error
            else:
                yield value
    finally:
        stop.set()
        for thread in threads:
            thread.join()
