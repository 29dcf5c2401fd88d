"""What `python -m spinenet_tf.draw` does, without its flags: `DrawConfig` (validated, with messages that name
the flags) and `run`, which draws a registry backbone's network (or its widths with a block-spec file's table) (`network.draw_network`) and writes it as a PNG."""

from __future__ import annotations

import dataclasses
import pathlib

from spinenet_tf import registry
from spinenet_tf.backbones.block_spec_file import read_block_spec_file
from spinenet_tf.visualization.network import MIN_SIZE, describe_model, draw_network, plan_for_model


@dataclasses.dataclass(frozen=True)
class DrawConfig:
    """What `python -m spinenet_tf.draw` draws; validation messages name the flags.

    Attributes:
        model: A SpineNet or SpineNet-Mobile name from `registry.BACKBONES`.
        out: Path of the PNG to write (missing parent folders are created).
        width, height: Picture size in pixels.
        block_specs: A block-spec file (`backbones.block_spec_file`) replacing the backbone's table and stem.
    """

    model: str
    out: str
    width: int = 1600
    height: int = 600
    block_specs: str | None = None

    def __post_init__(self):
        if self.model not in registry.BACKBONES:
            raise ValueError(f"--model={self.model}: unknown backbone; valid names: {', '.join(registry.BACKBONES)}")
        if registry.BACKBONES[self.model].family == "resnet":
            raise ValueError(f"--model={self.model}: a ResNet is scale-decreased, with no block plan to draw")
        if not self.out.lower().endswith(".png"):
            raise ValueError(f"--out={self.out}: must be a path ending in .png")
        if self.width < MIN_SIZE[0] or self.height < MIN_SIZE[1]:
            raise ValueError(f"--width={self.width} --height={self.height}: must be at least "
                             f"{MIN_SIZE[0]}x{MIN_SIZE[1]}")
        if self.block_specs:  # here, before `run`, whose OSErrors are about --out
            read_block_spec_file(self.block_specs, registry.BACKBONES[self.model].family)


def run(config: DrawConfig) -> pathlib.Path:
    """Draws `config.model` and writes it to `config.out`.

    Raises:
        OSError: If the file (or its folder) cannot be written.
    """
    plan = plan_for_model(config.model, block_specs=config.block_specs)
    title, subtitle = describe_model(config.model, plan, table=config.block_specs or "")
    image = draw_network(plan, title, config.width, config.height, subtitle=subtitle)
    path = pathlib.Path(config.out)
    if not path.parent.exists():
        path.parent.mkdir(parents=True)
    image.save(path, format="PNG")
    return path
