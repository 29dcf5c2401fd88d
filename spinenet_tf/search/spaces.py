"""The search spaces of scale-permuted backbones (SpineNet paper, arXiv:1912.05027 §3.1, §3.3, §5.1), in PyGlove.

A space is a `SearchSpace`; `SPACES` names the paper's:

- "spinenet": the space SpineNet-49 was found in. 15 blocks: the 10 intermediate blocks of R0-SP53's allocation
  ({L2 1, L3 3, L4 5, L5 1}, ResNet-50's blocks) and 5 output blocks L3..L7. Decisions (§3.1): the order of the
  intermediate blocks and, separately, of the output blocks ((N-5)!·5! orderings); two parents per block, an
  intermediate block's among the last 5 blocks built, an output block's among all earlier blocks and the stem
  (§5.1); a level adjustment in {-1, 0, +1, +2} per intermediate block; bottleneck or residual per block. The
  paper does not name the allocation the adjustments start from; R0-SP53's is the one its 15 blocks and Table 1
  suggest, and SpineNet-49's table is a point of it (`encode` finds the decisions).
- "r0-sp53", "r14-sp39", "r23-sp30", "r35-sp18": the R[N]-SP[M] family (§3.3, Table 1). The stem keeps part of
  ResNet-50's scale-decreased path (`stem_blocks_per_level`); the rest of ResNet-50's blocks, one L5 block traded
  for an L6 and an L7 block, are scale-permuted. Only orderings and connections are searched; every block is a
  bottleneck. Every stem block is a candidate parent (the paper's formula counts "the candidate blocks in the stem"
  without saying which blocks of the R35/R23/R14 stems those are).
- "spinenet-mobile": SpineNet-Mobile's layout (arXiv:2010.11426: SpineNet-49's topology, the fixed L1 + L2 MBConv
  stem, the second L2 stem block moved into the table), searched over levels and connections with MBConv blocks:
  11 intermediate blocks ({L2 2, L3 3, L4 5, L5 1}) with level adjustments, 5 output blocks. The SpineNet-Mobile
  papers searched no such space (appendix A of arXiv:1912.05027 hand-designs the MBConv models); it is ours, made
  so that SpineNet-Mobile-49's table is a point of it.

A level adjustment never takes a block below the stem's lowest level (`validate_block_specs`): the L2 block of the
"spinenet" space may move by {0, +1, +2} only, while the mobile stem has an L1 block, so there it may move to L1.

Each decision is a PyGlove hyper value (`pg.permutate` for the orderings, `pg.sublist_of(2, ..., distinct, sorted)`
for the parents, `pg.oneof` for adjustments and block types; see `SearchSpace.hyper_value`), so PyGlove's samplers
and evolution run on `SearchSpace.dna_spec()` unchanged; `SearchSpace.materialize(dna)` turns a point into a
validated `Architecture` (the block-spec table and the stem), and `SearchSpace.encode(table)` goes back. One
point costs PyGlove about 0.1 s to draw on one CPU core; `materialize` decodes it in milliseconds (PyGlove's own
`pg.materialize` of the hyper value gives the same decisions, at about 0.1-0.3 s).

    space = SPACES["spinenet"]
    arch = space.materialize(pg.random_dna(space.dna_spec(), random.Random(0)))
    backbone = arch.build(input_shape=(128, 128, 3), filter_size_scale=0.25)
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import random
from collections.abc import Iterator, Mapping, Sequence

import pyglove as pg

from spinenet_tf.backbones.block_spec_file import FAMILIES, Architecture
from spinenet_tf.backbones.block_specs import (DEFAULT_STEM_BLOCKS_PER_LEVEL, BlockSpec,
                                               normalize_stem_blocks_per_level, parse_block_specs)

OUTPUT_LEVELS = (3, 4, 5, 6, 7)     # paper §3: 5 output blocks, P3..P7
LEVEL_OFFSETS = (-1, 0, 1, 2)       # paper §3.1, block adjustments of intermediate blocks
PARENT_WINDOW = 5                   # paper §5.1: intermediate blocks pick parents among the last 5 blocks built
RESNET50_LEVELS = (2, 3, 4, 5, 6, 7)
# ResNet-50's blocks as the R[N]-SP[M] family allocates them (paper §3.3): {3, 4, 6, 3} at L2..L5 with one L5
# block traded for an L6 and an L7 block, so 17 blocks at L2..L7.
RESNET50_PERMUTED_ALLOCATION = (3, 4, 6, 2, 1, 1)

# Paper Table 1: stem blocks at {L2, L3, L4, L5} and scale-permuted blocks at {L2, ..., L7}.
R_SP_FAMILY = {
    "r35-sp18": ((2, 3, 5, 1), (1, 1, 1, 1, 1, 1)),
    "r23-sp30": ((2, 2, 2, 1), (1, 2, 4, 1, 1, 1)),
    "r14-sp39": ((1, 1, 1, 1), (2, 3, 5, 1, 1, 1)),
    "r0-sp53": ((2, 0, 0, 0), (1, 4, 6, 2, 1, 1)),
}


@dataclasses.dataclass(frozen=True)
class SpaceSize:
    """How many choices each part of a space offers (paper §3.1's factors, with this space's restrictions).

    Attributes:
        orderings: (#intermediate)! · (#output)!, the paper's (N-5)!·5!; identical blocks count once per position.
        distinct_level_orders: Distinct sequences of allocation levels (before adjustment) times the output orders.
        connections: Parent pairs, with the parent window: the product over blocks of C(#candidates, 2).
        connections_unrestricted: The paper's formula prod_{i=m}^{N+m-1} C(i, 2), any earlier block a parent.
        level_adjustments: Offsets over all intermediate blocks (4^(N-5) in the paper, fewer where a level would
            leave the stem's range).
        block_types: #block types ** N (the paper's 2^N).
        total: orderings · connections · level_adjustments · block_types, the number of PyGlove DNA points
            (several of which may give one table: blocks of equal level swap without a change).
        decision_points: Decisions of one DNA (PyGlove's decision points; a choice with one option is none).
    """

    orderings: int
    distinct_level_orders: int
    connections: int
    connections_unrestricted: int
    level_adjustments: int
    block_types: int
    total: int
    decision_points: int


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A space of scale-permuted tables around a fixed stem (see the module docstring).

    Attributes:
        name: Key in `SPACES`.
        family: "spinenet" or "spinenet_mobile": the backbone class the tables build with.
        stem_blocks_per_level: SpineNet's stem at L2..L5; None for the mobile family's fixed stem.
        intermediate_levels: The allocation the intermediate blocks are ordered from (levels before adjustment).
        output_levels: The output blocks' levels, ordered separately.
        level_offsets: Adjustments an intermediate block may make to its level ((0,) for none).
        block_fns: Block types every block chooses from.
        parent_window: Intermediate blocks choose parents among this many blocks built last.
    """

    name: str
    family: str
    stem_blocks_per_level: tuple[int, ...] | None
    intermediate_levels: tuple[int, ...]
    output_levels: tuple[int, ...] = OUTPUT_LEVELS
    level_offsets: tuple[int, ...] = (0,)
    block_fns: tuple[str, ...] = ("bottleneck",)
    parent_window: int = PARENT_WINDOW

    # --- structure ---------------------------------------------------------------------------------------------
    @property
    def stem(self) -> tuple[tuple[int, str], ...]:
        """(level, block_fn) of the stem blocks, the first `num_stem` candidate parents."""
        return FAMILIES[self.family].stem_blocks(self.stem_blocks_per_level)

    @property
    def num_stem(self) -> int:
        return len(self.stem)

    @property
    def num_blocks(self) -> int:
        """N, the table's rows: intermediate then output blocks."""
        return len(self.intermediate_levels) + len(self.output_levels)

    @property
    def min_level(self) -> int:
        return min(self.output_levels)

    @property
    def max_level(self) -> int:
        return max(self.output_levels)

    def offsets_for(self, level: int) -> tuple[int, ...]:
        """The adjustments open to an intermediate block of `level`: those keeping it within the stem's lowest
        level and max_level (`validate_block_specs`)."""
        lowest = min(level for level, _ in self.stem)
        return tuple(o for o in self.level_offsets if lowest <= level + o <= self.max_level)

    def parent_candidates(self, row: int) -> range:
        """Block indices row `row` (block num_stem + row) may take as parents."""
        index = self.num_stem + row
        if row < len(self.intermediate_levels):
            return range(max(0, index - self.parent_window), index)
        return range(index)

    # --- PyGlove ----------------------------------------------------------------------------------------------
    def hyper_value(self) -> pg.Dict:
        """The space as a PyGlove hyper value (a fresh one per call), a `pg.Dict` of:

            intermediate_order: pg.permutate of the allocation's indices: which block is built at each position
            level_offsets:      per allocation index, pg.oneof(`offsets_for(level)`)
            output_order:       pg.permutate of `output_levels`
            block_fns:          per table row, pg.oneof(`block_fns`)
            parents:            per table row, pg.sublist_of(2, `parent_candidates(row)`, distinct=True, sorted=True)

        A choice with a single option is a constant, not a decision.
        """
        parents = []
        for row in range(self.num_blocks):
            candidates = list(self.parent_candidates(row))
            parents.append(candidates if len(candidates) == 2 else
                           pg.sublist_of(2, candidates, distinct=True, sorted=True))
        return pg.Dict(intermediate_order=pg.permutate(list(range(len(self.intermediate_levels)))),
                       level_offsets=[_choice(self.offsets_for(level)) for level in self.intermediate_levels],
                       output_order=pg.permutate(list(self.output_levels)),
                       block_fns=[_choice(self.block_fns) for _ in range(self.num_blocks)],
                       parents=parents)

    def dna_spec(self) -> pg.DNASpec:
        """The decision points PyGlove's algorithms search (`pg.random_dna`, `pg.evolution`, ...)."""
        return pg.dna_spec(self.hyper_value())

    def materialize(self, dna: pg.DNA) -> Architecture:
        """The validated architecture of a DNA of `dna_spec()`: `architecture(pg.materialize(hyper_value(), dna))`,
        decoded without PyGlove's symbolic copy of the hyper value (~0.3 s a point; this takes milliseconds)."""
        return self.architecture(_decoder(self).decode(dna))

    def architecture(self, decisions: Mapping) -> Architecture:
        """The architecture of a concrete value of `hyper_value()` (see there for its fields), validated."""
        order, outputs = list(decisions["intermediate_order"]), list(decisions["output_order"])
        offsets, block_fns = list(decisions["level_offsets"]), list(decisions["block_fns"])
        parents = [tuple(sorted(int(p) for p in pair)) for pair in decisions["parents"]]
        levels = [self.intermediate_levels[i] + int(offsets[i]) for i in order] + [int(level) for level in outputs]
        rows = tuple(BlockSpec(level, str(block_fn), pair, row >= len(order))
                     for row, (level, block_fn, pair) in enumerate(zip(levels, block_fns, parents)))
        architecture = Architecture(self.family, rows, self._stem_counts())
        architecture.validate(self.min_level, self.max_level)
        return architecture

    def encode(self, block_specs: Sequence) -> pg.DNA:
        """The DNA whose `materialize` gives `block_specs`: the inverse, to check a table is a point of the space.

        Level adjustments are resolved by matching each intermediate block to an allocation candidate it can
        reach (smallest adjustments first); any matching gives the same table.

        Raises:
            ValueError: Naming why the table is not a point of this space.
        """
        specs = parse_block_specs(block_specs)
        num_intermediate = len(self.intermediate_levels)
        if len(specs) != self.num_blocks:
            raise ValueError(f"{self.name}: {len(specs)} rows, the space has {self.num_blocks} "
                             f"({num_intermediate} intermediate + {len(self.output_levels)} output blocks)")
        for row, spec in enumerate(specs):
            where = f"{self.name}: row {row} (block {self.num_stem + row})"
            if spec.is_output != (row >= num_intermediate):
                raise ValueError(f"{where}: is_output={spec.is_output}; the space puts its "
                                 f"{len(self.output_levels)} output blocks last")
            if spec.block_fn not in self.block_fns:
                raise ValueError(f"{where}: block_fn {spec.block_fn!r} is not one of {', '.join(self.block_fns)}")
            candidates = self.parent_candidates(row)
            if len(set(spec.input_offsets)) != 2 or not all(p in candidates for p in spec.input_offsets):
                raise ValueError(f"{where}: inputs {spec.input_offsets} are not two distinct blocks in "
                                 f"[{candidates.start}, {candidates.stop})")
        output_levels = [spec.level for spec in specs[num_intermediate:]]
        if sorted(output_levels) != sorted(self.output_levels):
            raise ValueError(f"{self.name}: output levels {output_levels} are not an order of {self.output_levels}")
        slots = self._match_levels([spec.level for spec in specs[:num_intermediate]])
        offsets = [0] * num_intermediate
        for slot, spec in zip(slots, specs):
            offsets[slot] = spec.level - self.intermediate_levels[slot]
        decisions = pg.Dict(intermediate_order=slots, level_offsets=offsets, output_order=output_levels,
                            block_fns=[spec.block_fn for spec in specs],
                            parents=[sorted(spec.input_offsets) for spec in specs])
        dna = pg.template(self.hyper_value()).encode(decisions)
        dna.use_spec(self.dna_spec())  # checks distinct / sorted choices
        return dna

    def sample(self, num: int, seed: int) -> Iterator[tuple[pg.DNA, Architecture]]:
        """`num` uniformly random points (DNA, validated architecture), reproducible from `seed`."""
        spec = self.dna_spec()
        rng = random.Random(seed)
        for _ in range(num):
            dna = pg.random_dna(spec, rng)
            yield dna, self.materialize(dna)

    def size(self) -> SpaceSize:
        """The size of each part of the space, and of the whole (see `SpaceSize`)."""
        num_intermediate, num_outputs = len(self.intermediate_levels), len(self.output_levels)
        counts = collections.Counter(self.intermediate_levels)
        level_orders = math.factorial(num_intermediate) // math.prod(math.factorial(n) for n in counts.values())
        connections = math.prod(math.comb(len(self.parent_candidates(row)), 2) for row in range(self.num_blocks))
        unrestricted = math.prod(math.comb(i, 2) for i in range(self.num_stem, self.num_stem + self.num_blocks))
        adjustments = math.prod(len(self.offsets_for(level)) for level in self.intermediate_levels)
        orderings = math.factorial(num_intermediate) * math.factorial(num_outputs)
        block_types = len(self.block_fns) ** self.num_blocks
        return SpaceSize(orderings=orderings, distinct_level_orders=level_orders * math.factorial(num_outputs),
                         connections=connections, connections_unrestricted=unrestricted,
                         level_adjustments=adjustments, block_types=block_types,
                         total=orderings * connections * adjustments * block_types,
                         decision_points=len(self.dna_spec().decision_points))

    # --- internals --------------------------------------------------------------------------------------------
    def _stem_counts(self) -> tuple[int, ...] | None:
        return None if self.stem_blocks_per_level is None else normalize_stem_blocks_per_level(
            self.stem_blocks_per_level)

    def _match_levels(self, levels: Sequence[int]) -> list[int]:
        """For each intermediate row, a distinct allocation index whose level reaches the row's level by an allowed
        adjustment (Kuhn's augmenting paths, smallest adjustment tried first)."""
        allocation = self.intermediate_levels
        options = [sorted((i for i, base in enumerate(allocation) if level - base in self.offsets_for(base)),
                          key=lambda i, level=level: (abs(level - allocation[i]), i)) for level in levels]
        owner: dict[int, int] = {}

        def assign(row: int, seen: set[int]) -> bool:
            for slot in options[row]:
                if slot not in seen:
                    seen.add(slot)
                    if slot not in owner or assign(owner[slot], seen):
                        owner[slot] = row
                        return True
            return False

        for row in range(len(levels)):
            if not assign(row, set()):
                raise ValueError(f"{self.name}: intermediate levels {list(levels)} cannot come from the allocation "
                                 f"{list(allocation)} with adjustments {self.level_offsets}")
        slot_of = {row: slot for slot, row in owner.items()}
        return [slot_of[row] for row in range(len(levels))]


class _Decoder:
    """`pg.materialize(space.hyper_value(), dna)` as plain lists, for hyper values whose primitives (`pg.oneof`,
    `pg.manyof`: `pg.permutate`, `pg.sublist_of`) choose among constants, with PyGlove's checks of a DNA: one child
    per primitive (the DNA itself for a single one), a value per choice, each an int in range, distinct and sorted
    where the primitive says so."""

    def __init__(self, hyper_value: pg.Dict):
        self.skeleton = {key: _plain(value) for key, value in hyper_value.items()}
        self.primitives = []  # (path of keys, candidates, num_choices, distinct, sorted, one_of), in DNA order
        for location, primitive in pg.template(hyper_value).hyper_primitives:
            if not isinstance(primitive, pg.hyper.Choices) or not all(
                    isinstance(c, (int, str)) and not isinstance(c, bool) for c in primitive.candidates):
                raise TypeError(f"{location}: {primitive!r} is not a choice among int or str constants")
            self.primitives.append((tuple(location.keys), tuple(primitive.candidates), primitive.num_choices,
                                    primitive.choices_distinct, primitive.choices_sorted,
                                    isinstance(primitive, pg.hyper.OneOf)))

    def decode(self, dna: pg.DNA) -> dict:
        children = [dna] if len(self.primitives) == 1 else list(dna.children)
        if len(children) != len(self.primitives):
            raise ValueError(f"the DNA has {len(children)} child values, the space {len(self.primitives)} hyper "
                             f"primitives: {dna!r}")
        decisions = {key: _plain(value) for key, value in self.skeleton.items()}  # a copy to fill in
        for (path, candidates, num_choices, distinct, is_sorted, one_of), child in zip(self.primitives, children):
            values = [child.value] if num_choices == 1 else [sub.value for sub in child.children]
            where = str(path[0]) + "".join(f"[{key}]" for key in path[1:])
            if len(values) != num_choices:
                raise ValueError(f"{where}: {len(values)} DNA values for {num_choices} choices")
            if distinct and len(set(values)) != len(values):
                raise ValueError(f"{where}: DNA values {values} should be distinct")
            if is_sorted and sorted(values) != values:
                raise ValueError(f"{where}: DNA values {values} should be sorted")
            for value in values:
                if not isinstance(value, int) or not 0 <= value < len(candidates):
                    raise ValueError(f"{where}: DNA value {value!r} is not a choice of {len(candidates)}")
            chosen = [candidates[value] for value in values]
            container = decisions
            for key in path[:-1]:
                container = container[key]
            container[path[-1]] = chosen[0] if one_of else chosen
        return decisions


@functools.lru_cache(maxsize=None)
def _decoder(space: SearchSpace) -> _Decoder:
    return _Decoder(space.hyper_value())


def _plain(value):
    """A constant part of a hyper value as plain lists, copied (None for a hyper primitive: decoding fills it in)."""
    if isinstance(value, pg.hyper.HyperPrimitive):
        return None
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _choice(values: Sequence):
    """A constant for a single option, else `pg.oneof` (no decision point for a choice that is not one)."""
    values = list(values)
    return values[0] if len(values) == 1 else pg.oneof(values)


def _intermediate_allocation(permuted_per_level: Sequence[int]) -> tuple[int, ...]:
    """The intermediate blocks' levels of a scale-permuted allocation at L2..L7: all but one output per L3..L7."""
    counts = dict(zip(RESNET50_LEVELS, permuted_per_level))
    for level in OUTPUT_LEVELS:
        counts[level] -= 1
    return tuple(level for level in RESNET50_LEVELS for _ in range(counts[level]))


def _r_sp_space(name: str) -> SearchSpace:
    stem, permuted = R_SP_FAMILY[name]
    return SearchSpace(name, "spinenet", stem, _intermediate_allocation(permuted))


_R0_SP53_INTERMEDIATE = _intermediate_allocation(R_SP_FAMILY["r0-sp53"][1])  # (2, 3, 3, 3, 4, 4, 4, 4, 4, 5)

SPACES = {
    "spinenet": SearchSpace("spinenet", "spinenet", DEFAULT_STEM_BLOCKS_PER_LEVEL, _R0_SP53_INTERMEDIATE,
                            level_offsets=LEVEL_OFFSETS, block_fns=("bottleneck", "residual")),
    **{name: _r_sp_space(name) for name in R_SP_FAMILY},
    "spinenet-mobile": SearchSpace("spinenet-mobile", "spinenet_mobile", None, (2,) + _R0_SP53_INTERMEDIATE,
                                   level_offsets=LEVEL_OFFSETS, block_fns=("mbconv",)),
}


def get_space(name: str) -> SearchSpace:
    """The space called `name`, or a ValueError listing the valid names."""
    if name not in SPACES:
        raise ValueError(f"unknown search space {name!r}; valid names: {', '.join(SPACES)}")
    return SPACES[name]


__all__ = ["FAMILIES", "LEVEL_OFFSETS", "OUTPUT_LEVELS", "PARENT_WINDOW", "RESNET50_PERMUTED_ALLOCATION",
           "R_SP_FAMILY", "SPACES", "Architecture", "SearchSpace", "SpaceSize", "get_space"]
