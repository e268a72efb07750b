"""Small media files made at test time with PyAV (no numpy), and what a recording holds."""

from __future__ import annotations

import array
import fractions
import math
from pathlib import Path

import av


def make_clip(path: Path, seconds: float = 2.0, *, video: bool = True, audio: bool = True,
              fps: int = 15, width: int = 320, height: int = 240, rate: int = 48000) -> Path:
    """A tiny test file: colour bars with a moving stripe (H.264) and a 440 Hz sine (AAC,
    or PCM in a .wav)."""
    with av.open(str(path), "w") as out:
        vs = as_ = None
        if video:  # every stream is added before the first packet (the header)
            vs = out.add_stream("libx264", rate=fps)
            vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
            vs.options = {"preset": "ultrafast"}
        if audio:
            as_ = out.add_stream("pcm_s16le" if path.suffix == ".wav" else "aac", rate=rate)
            as_.layout = "mono"
        if vs is not None:
            base = bytearray(width * height * 3)
            for y in range(height):
                for x in range(width):
                    o = (y * width + x) * 3
                    base[o], base[o + 1] = x * 255 // width, y * 255 // height
            for i in range(int(seconds * fps)):
                img = bytearray(base)
                x0 = (i * 8) % (width - 20)
                for y in range(height):
                    o = (y * width + x0) * 3 + 2
                    img[o:o + 60:3] = b"\xff" * 20
                frame = av.VideoFrame(width, height, "rgb24")
                frame.planes[0].update(bytes(img))
                frame.pts, frame.time_base = i, fractions.Fraction(1, fps)
                for packet in vs.encode(frame):
                    out.mux(packet)
            for packet in vs.encode(None):
                out.mux(packet)
        if as_ is not None:
            total, t = int(seconds * rate), 0
            while t < total:
                k = min(1024, total - t)
                samples = array.array("h", (int(9000 * math.sin(2 * math.pi * 440 * (t + j) / rate))
                                            for j in range(k)))
                frame = av.AudioFrame(format="s16", layout="mono", samples=k)
                frame.planes[0].update(samples.tobytes())
                frame.sample_rate, frame.pts = rate, t
                frame.time_base = fractions.Fraction(1, rate)
                for packet in as_.encode(frame):
                    out.mux(packet)
                t += k
            for packet in as_.encode(None):
                out.mux(packet)
    return path


def decoded_frames(path: Path) -> dict[str, int]:
    """How many frames of each kind a file holds, decoded (not just demuxed)."""
    counts: dict[str, int] = {}
    with av.open(str(path)) as container:
        for frame in container.decode(*container.streams):
            kind = "video" if isinstance(frame, av.VideoFrame) else "audio"
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def video_size(path: Path) -> tuple[int, int]:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return frame.width, frame.height
