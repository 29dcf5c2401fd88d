"""What `python -m spinenet_tf.draw` does, without its flags: `DrawConfig` (validated, with messages that name
the flags) and `run`, which draws a registry backbone's network (`network.draw_network`) and writes it as a PNG."""

from __future__ import annotations

import dataclasses
import pathlib

from spinenet_tf import registry
from spinenet_tf.visualization.network import MIN_SIZE, describe_model, draw_network, plan_for_model


@dataclasses.dataclass(frozen=True)
class DrawConfig:
    """What `python -m spinenet_tf.draw` draws; validation messages name the flags.

    Attributes:
        model: A name from `registry.BACKBONES`.
        out: Path of the PNG to write (missing parent folders are created).
        width, height: Picture size in pixels.
    """

    model: str
    out: str
    width: int = 1600
    height: int = 600

    def __post_init__(self):
        if self.model not in registry.BACKBONES:
            raise ValueError(f"--model={self.model}: unknown backbone; valid names: {', '.join(registry.BACKBONES)}")
        if not self.out.lower().endswith(".png"):
            raise ValueError(f"--out={self.out}: must be a path ending in .png")
        if self.width < MIN_SIZE[0] or self.height < MIN_SIZE[1]:
            raise ValueError(f"--width={self.width} --height={self.height}: must be at least "
                             f"{MIN_SIZE[0]}x{MIN_SIZE[1]}")


def run(config: DrawConfig) -> pathlib.Path:
    """Draws `config.model` and writes it to `config.out`.

    Raises:
        OSError: If the file (or its folder) cannot be written.
    """
    plan = plan_for_model(config.model)
    title, subtitle = describe_model(config.model, plan)
    image = draw_network(plan, title, config.width, config.height, subtitle=subtitle)
    path = pathlib.Path(config.out)
    if not path.parent.exists():
        path.parent.mkdir(parents=True)
    image.save(path, format="PNG")
    return path
