"""Block-spec files: a scale-permuted table and its stem as a small JSON file, and `Architecture`, what one holds.

The format (the search's `best.json` is one; `Architecture.to_json_dict()` writes it):

    {
      "family": "spinenet",
      "stem_blocks_per_level": [2, 0, 0, 0],
      "block_specs": [
        [2, "bottleneck", [0, 1], false],
        [4, "residual",   [0, 1], false],
        ...
        [6, "bottleneck", [12, 14], true]
      ]
    }

- `block_specs` (required): the table, one row per block after the stem, `[level, block_fn, [input, input],
  is_output]` as in `block_specs.BlockSpec` (a row may also be an object with those four keys). Input offsets
  count the stem blocks first: with m stem blocks, row r is block m + r. The rules are `validate_block_specs` and
  `plan_network`'s (levels within the stem's lowest and max_level, parents earlier, output blocks covering
  P3..P7, one output block per level).
- `family` (optional): "spinenet" (`SpineNet`, also the R[N]-SP[M] tables of the paper's Table 1) or
  "spinenet_mobile" (`SpineNetMobile`). When given it must be the family of the model the file is used with.
- `stem_blocks_per_level` (optional, "spinenet" only): the scale-decreased stem's bottlenecks at L2..L5 (paper
  Table 1); absent or null is SpineNet's (2, 0, 0, 0). The mobile family's stem is fixed: null or absent.
- Other keys are ignored (`best.json` adds the trial and its reward).

`build_backbone(name, block_specs=PATH)`, `build_detector` / `build_classifier` (the same override), `python -m
spinenet_tf.train --block_specs=FILE`, `summary --block_specs=FILE` and `draw --block_specs=FILE` read it through
`load_architecture`. A file that is missing, not JSON, or whose table breaks a rule is a ValueError (or
FileNotFoundError) of one line that names the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence

from spinenet_tf.backbones.block_specs import (DEFAULT_STEM_BLOCKS_PER_LEVEL, BlockSpec,
                                               normalize_stem_blocks_per_level, parse_block_specs)
from spinenet_tf.backbones.spinenet import SpineNet, SpineNetMobile

FAMILIES = {"spinenet": SpineNet, "spinenet_mobile": SpineNetMobile}
_KNOWN_KEYS = ("family", "stem_blocks_per_level", "block_specs")


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A scale-permuted table and the stem it is wired to: the content of a block-spec file, a point of a search
    space (`spinenet_tf.search.spaces`).

    Attributes:
        family: "spinenet" (`SpineNet`) or "spinenet_mobile" (`SpineNetMobile`).
        block_specs: The table; input offsets count the stem blocks first.
        stem_blocks_per_level: SpineNet's stem (blocks at L2..L5); None for the mobile family's fixed stem (and,
            for "spinenet", SpineNet's default stem).
    """

    family: str
    block_specs: tuple[BlockSpec, ...]
    stem_blocks_per_level: tuple[int, ...] | None = DEFAULT_STEM_BLOCKS_PER_LEVEL

    def backbone_kwargs(self) -> dict:
        """The constructor arguments (or `build_backbone` overrides) that select this table and stem."""
        kwargs = {"block_specs": self.block_specs}
        if self.stem_blocks_per_level is not None:
            kwargs["stem_blocks_per_level"] = self.stem_blocks_per_level
        return kwargs

    def validate(self, min_level: int = 3, max_level: int = 7) -> None:
        """Raises ValueError if the table does not wire into a network (`plan_network`'s checks)."""
        FAMILIES[self.family].network_plan(self.block_specs, min_level, max_level,
                                           stem_blocks_per_level=self.stem_blocks_per_level)

    def build(self, input_shape: Sequence[int | None] = (None, None, 3), **kwargs) -> SpineNet:
        """The backbone of this architecture; `kwargs` are further constructor arguments (widths, activation...)."""
        return FAMILIES[self.family](input_shape=tuple(input_shape), **self.backbone_kwargs(), **kwargs)

    def to_json_dict(self) -> dict:
        """The block-spec file's JSON object (see the module docstring)."""
        return {"family": self.family,
                "stem_blocks_per_level": (None if self.stem_blocks_per_level is None
                                          else list(self.stem_blocks_per_level)),
                "block_specs": [spec.to_list() for spec in self.block_specs]}

    @classmethod
    def from_json_dict(cls, data: Mapping, family: str | None = None) -> Architecture:
        """The architecture of a block-spec file's JSON object, checked for form (not wiring: `validate`).

        Args:
            data: The object; keys as in the module docstring.
            family: The family of the model it is for: the default when `data` has none, else it must agree.

        Raises:
            ValueError: Naming the key at fault.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a JSON object with the keys {', '.join(_KNOWN_KEYS)}, "
                             f"got {type(data).__name__}")
        if "block_specs" not in data:
            raise ValueError("no \"block_specs\" key (the table: [[level, block_fn, [input, input], is_output], "
                             "...])")
        own = data.get("family")
        if own is not None and own not in FAMILIES:
            raise ValueError(f"family {own!r} is not one of {', '.join(FAMILIES)}")
        if own is not None and family is not None and own != family:
            raise ValueError(f"a {own} table cannot build a {family} model")
        family = own or family or "spinenet"
        rows = data["block_specs"]
        if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Sequence) or not rows:
            raise ValueError(f"\"block_specs\" must be a non-empty list of rows, got {rows!r:.80}")
        try:
            specs = parse_block_specs(rows)
        except (TypeError, KeyError, ValueError) as error:
            raise ValueError(f"\"block_specs\": a row is not [level, block_fn, [input, input], is_output]: "
                             f"{error}") from None
        stem = data.get("stem_blocks_per_level")
        if stem is not None:
            if family == "spinenet_mobile":
                raise ValueError(f"\"stem_blocks_per_level\": {stem}: the spinenet_mobile stem is fixed (null)")
            stem = normalize_stem_blocks_per_level(stem)
        return cls(family, specs, stem)


def read_block_spec_file(path: str | os.PathLike, family: str | None = None, min_level: int = 3,
                         max_level: int = 7) -> Architecture:
    """The validated architecture in the block-spec file `path` (see the module docstring).

    Args:
        path: The JSON file.
        family: The family of the model it is for (a file of another family is refused).
        min_level, max_level: The endpoint levels the table must cover.

    Raises:
        FileNotFoundError, ValueError: One line starting with the file's path.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such block-spec file")
    try:
        with open(path) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a JSON block-spec file ({error})") from None
    return _checked(data, family, min_level, max_level, where=path)


def load_architecture(value, family: str | None = None, min_level: int = 3, max_level: int = 7) -> Architecture:
    """The validated architecture of a `block_specs` argument that is a file path or a block-spec file's JSON
    object (e.g. one embedded in a training run's `model_overrides`).

    Raises:
        FileNotFoundError, ValueError: One line naming the file (or "block_specs" for an object).
    """
    if isinstance(value, (str, os.PathLike)):
        return read_block_spec_file(value, family, min_level, max_level)
    return _checked(value, family, min_level, max_level, where="block_specs")


def is_table(value) -> bool:
    """Whether a `block_specs` argument is a table itself (rows), not a file path or a file's JSON object."""
    return value is None or not isinstance(value, (str, os.PathLike, Mapping))


def resolve_overrides(overrides: Mapping, family: str) -> dict:
    """Backbone overrides with a `block_specs` file path or JSON object replaced by its table and stem.

    Raises:
        ValueError: Also when `stem_blocks_per_level` is given and differs from the file's.
    """
    overrides = dict(overrides)
    if is_table(overrides.get("block_specs")):
        return overrides
    architecture = load_architecture(overrides["block_specs"], family, overrides.get("min_level", 3),
                                     overrides.get("max_level", 7))
    explicit = overrides.get("stem_blocks_per_level")
    if explicit is not None and normalize_stem_blocks_per_level(explicit) != (
            architecture.stem_blocks_per_level or DEFAULT_STEM_BLOCKS_PER_LEVEL):
        raise ValueError(f"stem_blocks_per_level={tuple(explicit)} differs from the block-spec file's "
                         f"{architecture.stem_blocks_per_level}; give the stem in one place")
    return {**overrides, **architecture.backbone_kwargs()}


def _checked(data, family: str | None, min_level: int, max_level: int, where: str) -> Architecture:
    try:
        architecture = Architecture.from_json_dict(data, family)
        architecture.validate(min_level, max_level)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    return architecture
