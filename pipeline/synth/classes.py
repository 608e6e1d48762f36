"""The classes of generated data sets: each one an object with its own look and its own sound.

A look is a shape (a gauge function: the shape is where it is ≤ 1, in units of the object's radius), a
saturated colour and a dark pattern drawn inside it. A sound has a main frequency band (`band_hz`) that
no other class's sound reaches, so the 257-bin 0–8 kHz spectrogram of SPEC §1.3 separates the classes,
and a temporal signature (steady, pulsed, swept, tremolo) on top.

Class folder names are `c<index>_<shape>_<sound>`: their sorted order is the class index order (the
order the stages use, SPEC §1.1), which holds for up to ten classes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClassSpec:
    index: int
    shape: str  # a key of synth_render.SHAPES
    sound: str  # a key of synth_sound.SOUNDS
    colour: tuple[int, int, int]  # RGB, saturated so the muted background never looks like it
    pattern: str  # a key of synth_render.PATTERNS
    band_hz: tuple[float, float]  # where most of the sound's energy lies

    @property
    def name(self) -> str:
        return f"c{self.index}_{self.shape}_{self.sound}"


# The first four differ most (hue, shape, band), since four classes is the default. Patterns are point
# symmetric (the triangle's is rotation invariant) so a look's colour centroid is its centre.
CLASS_SPECS: tuple[ClassSpec, ...] = (
    ClassSpec(0, "disc", "tone", (225, 35, 35), "stripes", (400.0, 480.0)),
    ClassSpec(1, "square", "noise", (35, 85, 235), "checker", (2000.0, 3000.0)),
    ClassSpec(2, "triangle", "pulses", (45, 200, 50), "rings", (900.0, 1100.0)),
    ClassSpec(3, "diamond", "chirp", (240, 205, 25), "dots", (4000.0, 5000.0)),
    ClassSpec(4, "ring", "whistle", (215, 45, 215), "solid", (6450.0, 6550.0)),
    ClassSpec(5, "cross", "clicks", (25, 205, 215), "solid", (3300.0, 3900.0)),
    ClassSpec(6, "hexagon", "chord", (250, 135, 20), "grid", (650.0, 750.0)),
    ClassSpec(7, "bar", "tremolo", (130, 60, 230), "stripes", (5400.0, 6000.0)),
)

MAX_CLASSES = len(CLASS_SPECS)


def class_specs(n_classes: int) -> tuple[ClassSpec, ...]:
    """The first `n_classes` classes, in index order."""
    if not 2 <= n_classes <= MAX_CLASSES:
        raise ValueError(f"classes must be between 2 and {MAX_CLASSES}, got {n_classes}")
    return CLASS_SPECS[:n_classes]


def class_by_name(name: str) -> ClassSpec:
    for spec in CLASS_SPECS:
        if spec.name == name:
            return spec
    raise KeyError(f"no generated class named {name!r}")
