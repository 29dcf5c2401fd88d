"""Pictures of scale-permuted networks, drawn like the SpineNet paper's figures (arXiv:1912.05027, Fig. 1 and 4).

Blocks stand left to right in table order (the stem at the far left), each at the height of its feature level
(L1/L2 at the bottom, L7 at the top). A block is a box coloured and lettered by type (R residual, B bottleneck,
M mbconv) with its index under the letter; output blocks get a thick outline and a "P<level>" tag; blocks that
feed no endpoint (Model Garden's level-2 block 17) are grey. Arrows run from each of a block's two parents into
it; extra fusion inputs (earlier unconsumed blocks an output block sums in) are dashed.

Everything works on the pure-Python plan (`plan_network`), so no Keras model is built. Drawing uses Pillow only,
at 2x and downsampled, for smooth curves.

    image = draw_network(plan_for_model("spinenet-49"), "spinenet-49")
    image.save("spinenet49.png")
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from PIL import Image, ImageDraw

from spinenet_tf import registry
from spinenet_tf.backbones.block_spec_file import load_architecture
from spinenet_tf.backbones.spinenet import BlockNode, SpineNet, SpineNetMobile
from spinenet_tf.visualization.fonts import font

Colour = tuple[int, int, int]
Point = tuple[float, float]

BLOCK_COLOURS: dict[str, Colour] = {"residual": (246, 178, 107), "bottleneck": (111, 168, 220),
                                    "mbconv": (147, 196, 125)}
BLOCK_LETTERS = {"residual": "R", "bottleneck": "B", "mbconv": "M"}
UNUSED_COLOUR: Colour = (208, 208, 208)      # fill of a block that feeds no endpoint
OUTPUT_COLOUR: Colour = (192, 0, 0)          # outline and tag of an output block
EDGE_COLOUR: Colour = (60, 74, 92)
UNUSED_EDGE_COLOUR: Colour = (185, 185, 185)
OUTPUT_OUTLINE_WIDTH = 4                     # pixels; other blocks have a 1-pixel outline
MIN_SIZE = (800, 300)                        # smaller pictures are not legible
_BACKGROUND: Colour = (255, 255, 255)
_TEXT: Colour = (25, 25, 25)
_MUTED: Colour = (120, 120, 120)
_OUTLINE: Colour = (70, 70, 70)
_GRID: Colour = (232, 232, 232)
_STEM_BAND: Colour = (244, 244, 246)
_SUPERSAMPLE = 2
_STEM_GAP = 0.6                              # extra space, in columns, between the stem and the table's blocks


# --- plans of named models ------------------------------------------------------------------------------------
def _scale_permuted_row(name: str) -> registry.BackboneSpec:
    """The registry row of a SpineNet or SpineNet-Mobile backbone; ValueError for an unknown name or a ResNet."""
    spec = registry.lookup(registry.BACKBONES, name, "backbone")
    if spec.family == "resnet":
        raise ValueError(f"{name}: a ResNet is scale-decreased, with no block plan to draw")
    return spec


def plan_for_model(name: str, min_level: int = 3, max_level: int = 7, block_specs=None) -> list[BlockNode]:
    """The block plan of a registry backbone, computed without building it.

    Mirrors `SpineNet.__init__` / `SpineNetMobile.__init__`: same table, stem and block widths (widths only
    matter for which unconsumed blocks an output block sums in). `block_specs`: a block-spec file (path or JSON
    object, `backbones.block_spec_file`) replacing the backbone's table and stem.

    Raises:
        ValueError: For a name not in `registry.BACKBONES` (the message lists the valid names), a ResNet (it has no
            block plan), or a bad block-spec file (naming it).

    Example:
        >>> [node.index for node in plan_for_model("spinenet-49") if not node.used]
        [17]
    """
    spec = _scale_permuted_row(name)
    cls = SpineNetMobile if spec.family == "spinenet_mobile" else SpineNet
    if block_specs is None:
        return cls.network_plan(min_level=min_level, max_level=max_level, filter_size_scale=spec.filter_size_scale)
    architecture = load_architecture(block_specs, spec.family, min_level, max_level)
    return cls.network_plan(architecture.block_specs, min_level, max_level, spec.filter_size_scale,
                            architecture.stem_blocks_per_level)


def describe_model(name: str, plan: Sequence[BlockNode], table: str = "") -> tuple[str, str]:
    """(title, subtitle) of a named backbone's picture: name (and `table`, where its table comes from) and block
    counts, then its registry row."""
    spec = _scale_permuted_row(name)
    num_stem = sum(1 for node in plan if not node.inputs)
    unused = sum(1 for node in plan if not node.used)
    title = f"{name}{f' with {table}' if table else ''}:  {len(plan)} blocks ({num_stem} stem + {len(plan) - num_stem} scale-permuted)"
    if unused:
        title += f", {unused} unused"
    parts = [f"filter_size_scale {spec.filter_size_scale:g}"]
    if spec.resample_alpha is not None:
        parts.append(f"resample_alpha {spec.resample_alpha:g}")
    parts += [f"block_repeats {spec.block_repeats}", f"endpoints {spec.endpoints_num_filters} channels"]
    return title, "   ·   ".join(parts)


# --- layout ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Edge:
    """One connection into a block.

    Attributes:
        parent, child: Block indices.
        kind: "input" (one of the block's two cross-scale inputs), "extra" (an unconsumed block summed into an
            output block) or "stem" (stem block to stem block).
        points: The routed curve in image pixels, parent's right side to child's left side.
    """

    parent: int
    child: int
    kind: str
    points: tuple[Point, ...]


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where everything goes in a `width` x `height` picture (image pixels, y down).

    Attributes:
        centres: Block index -> centre of its box.
        box_width, box_height: Size of every block box.
        level_y: Feature level -> y of that level's row.
        edges: Every connection, routed around the boxes it would otherwise cross.
        unit: Scale of text, margins and lines relative to a 1600 x 600 picture.
    """

    width: int
    height: int
    centres: dict[int, Point]
    box_width: float
    box_height: float
    level_y: dict[int, float]
    edges: tuple[Edge, ...]
    unit: float

    def box(self, index: int) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of block `index`."""
        x, y = self.centres[index]
        return x - self.box_width / 2, y - self.box_height / 2, x + self.box_width / 2, y + self.box_height / 2

    @property
    def tag_size(self) -> float:
        """Font size of the P tags above output blocks."""
        return max(9.0 * self.unit, 0.3 * self.box_height)

    @property
    def plot(self) -> tuple[float, float, float, float]:
        """(left, top, right, bottom) of the blocks' area: level labels on the left, title above, legend below."""
        return 64 * self.unit, 52 * self.unit, self.width - 24 * self.unit, self.height - 42 * self.unit


def _unit(width: int, height: int) -> float:
    return min(max(min(width / 1600, height / 600), 0.7), 2.5)


def layout(plan: Sequence[BlockNode], width: int = 1600, height: int = 600) -> Layout:
    """Places the blocks of `plan` and routes their connections.

    Block i sits in column i (the table's blocks shifted right of the stem by a small gap) and in the row of its
    level, higher levels higher up.

    Example:
        >>> boxes = layout(plan_for_model("spinenet-49"), 1600, 600)
        >>> boxes.centres[9][1] < boxes.centres[2][1]      # block 9 (L7) above block 2 (L2)
        True
    """
    unit = _unit(width, height)
    left, top, right, bottom = Layout(width, height, {}, 0, 0, {}, (), unit).plot
    levels = [node.level for node in plan]
    low, high = min(levels), max(levels)
    row = (bottom - top) / (high - low + 1)
    level_y = {level: top + row * (high - level + 0.5) for level in range(low, high + 1)}

    slots = [node.index + (_STEM_GAP if node.inputs else 0.0) for node in plan]
    column = (right - left) / (max(slots) + 1)
    centres = {node.index: (left + column * (slot + 0.5), level_y[node.level]) for node, slot in zip(plan, slots)}
    box_width = min(0.6 * column, 72 * unit)
    box_height = min(0.5 * row, 44 * unit)

    unrouted = Layout(width, height, centres, box_width, box_height, level_y, (), unit)
    return dataclasses.replace(unrouted, edges=tuple(_route_edges(plan, unrouted, top, bottom, row, column)))


def _connections(plan: Sequence[BlockNode]) -> list[tuple[int, int, str]]:
    """(parent, child, kind) of every connection, stem chain included."""
    stem = [node.index for node in plan if not node.inputs]
    edges = [(a, b, "stem") for a, b in zip(stem, stem[1:])]
    for node in plan:
        edges += [(parent, node.index, "input") for parent in node.inputs]
        edges += [(parent, node.index, "extra") for parent in node.extra_inputs]
    return edges


def _bezier(p0: Point, p1: Point, p2: Point, p3: Point, samples: int = 48) -> list[Point]:
    points = []
    for i in range(samples + 1):
        t = i / samples
        a, b, c, d = (1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t * t * (1 - t), t ** 3
        points.append((a * p0[0] + b * p1[0] + c * p2[0] + d * p3[0], a * p0[1] + b * p1[1] + c * p2[1] + d * p3[1]))
    return points


def _route_edges(plan, boxes: Layout, top: float, bottom: float, row: float, column: float) -> list[Edge]:
    """Cubic curves from the parent's right side to the child's left side.

    A curve that would run through another box (or P tag) is bent up or down, or leaves its parent more
    steeply: the first candidate that clears everything wins, else the one that crosses least. So a connection
    that skips blocks does not look like it passes through them. Connections into one block arrive at
    different heights, ordered by the parents' heights.
    """
    connections = _connections(plan)
    arrivals: dict[tuple[int, int], float] = {}
    for node in plan:
        parents = sorted({p for p, c, _ in connections if c == node.index}, key=lambda p: (boxes.centres[p][1], p))
        for k, parent in enumerate(parents):
            spread = 0.0 if len(parents) == 1 else (k / (len(parents) - 1) - 0.5) * 0.6 * boxes.box_height
            arrivals[parent, node.index] = spread

    obstacles = {index: boxes.box(index) for index in boxes.centres}
    for node in plan:
        if node.is_output:
            x0, y0, x1, y1 = obstacles[node.index]
            obstacles[node.index] = (x0, y0 - boxes.tag_size - 11 * boxes.unit, x1, y1)
    # Candidates in order of preference: straight before bent, long horizontal tangents before short ones.
    shapes = [(bend, reach) for bend in (0.0, -0.5, 0.5, -0.9, 0.9, -1.3, 1.3) for reach in (1.0, 0.5, 0.2)]
    pad = 3.0
    edges = []
    for parent, child, kind in connections:
        (px, py), (cx, cy) = boxes.centres[parent], boxes.centres[child]
        start = (px + boxes.box_width / 2, py)
        end = (cx - boxes.box_width / 2 - 1, cy + arrivals[parent, child])
        others = [box for index, box in obstacles.items() if index not in (parent, child)]
        best = None
        for bend, reach in shapes:
            span = end[0] - start[0]  # tangents longer than half the span would make the curve loop back
            offset, reach = bend * row, reach * min(max(0.45 * column, 0.35 * span), 0.5 * span)
            points = _bezier(start, (start[0] + reach, start[1] + offset), (end[0] - reach, end[1] + offset), end)
            hits = sum(any(x0 - pad <= x <= x1 + pad and y0 - pad <= y <= y1 + pad for x0, y0, x1, y1 in others)
                       for x, y in points)
            hits += sum(not top <= y <= bottom for _, y in points)
            if best is None or hits < best[0]:
                best = (hits, points)
            if hits == 0:
                break
        edges.append(Edge(parent, child, kind, tuple(best[1])))
    return edges


# --- drawing --------------------------------------------------------------------------------------------------
class _Canvas:
    """An ImageDraw at `_SUPERSAMPLE` x that takes image-pixel coordinates."""

    def __init__(self, width: int, height: int):
        self.size = (width, height)
        self.image = Image.new("RGB", (width * _SUPERSAMPLE, height * _SUPERSAMPLE), _BACKGROUND)
        self.draw = ImageDraw.Draw(self.image)

    @staticmethod
    def _s(value: float) -> float:
        return value * _SUPERSAMPLE

    def rect(self, box, fill=None, outline=None, width: float = 1, radius: float = 0):
        self.draw.rounded_rectangle([self._s(v) for v in box], radius=self._s(radius), fill=fill, outline=outline,
                                    width=max(1, round(self._s(width))))

    def line(self, points, colour, width: float, dash: float = 0):
        points = [(self._s(x), self._s(y)) for x, y in points]
        pieces = [points] if not dash else _dashes(points, self._s(dash))
        for piece in pieces:
            self.draw.line(piece, fill=colour, width=round(self._s(width)), joint="curve")

    def arrowhead(self, points, colour, size: float):
        (x0, y0), (x1, y1) = points[-3], points[-1]
        angle = math.atan2(y1 - y0, x1 - x0)
        tip = (self._s(x1), self._s(y1))
        wings = [(tip[0] - self._s(size) * math.cos(angle + turn), tip[1] - self._s(size) * math.sin(angle + turn))
                 for turn in (0.45, -0.45)]
        self.draw.polygon([tip, *wings], fill=colour)

    def text(self, xy: Point, text: str, size: float, colour=_TEXT, anchor: str = "mm"):
        self.draw.text((self._s(xy[0]), self._s(xy[1])), text, fill=colour, font=font(self._s(size)),
                       anchor=anchor)

    def text_width(self, text: str, size: float) -> float:
        return self.draw.textlength(text, font=font(self._s(size))) / _SUPERSAMPLE

    def result(self) -> Image.Image:
        return self.image.reduce(_SUPERSAMPLE)  # box filter: flat areas keep their exact colour


def _dashes(points: list[Point], dash: float) -> list[list[Point]]:
    """The "on" pieces of a polyline cut into dash-long pieces by arc length."""
    pieces, piece, run, on = [], [points[0]], 0.0, True
    for a, b in zip(points, points[1:]):
        length, t = math.dist(a, b), 0.0
        while length and run + (length - t) >= dash:
            t += dash - run
            cut = (a[0] + (b[0] - a[0]) * t / length, a[1] + (b[1] - a[1]) * t / length)
            if on:
                pieces.append(piece + [cut])
            piece, run, on = [cut], 0.0, not on
        run += length - t
        piece.append(b)
    if on:
        pieces.append(piece)
    return pieces


def draw_network(plan: Sequence[BlockNode], title: str, width: int = 1600, height: int = 600,
                 subtitle: str = "") -> Image.Image:
    """Draws a planned scale-permuted network (see the module docstring for the picture's conventions).

    Args:
        plan: The blocks, e.g. from `plan_for_model` or a backbone's `.plan`.
        title: The heading, e.g. the model name and block count.
        width, height: Size of the picture in pixels, at least `MIN_SIZE`.
        subtitle: An optional second, smaller heading line.

    Returns:
        An RGB image with the boxes where `layout(plan, width, height)` puts them.
    """
    if width < MIN_SIZE[0] or height < MIN_SIZE[1]:
        raise ValueError(f"picture size {width}x{height}: must be at least {MIN_SIZE[0]}x{MIN_SIZE[1]}")
    boxes = layout(plan, width, height)
    nodes = {node.index: node for node in plan}
    canvas = _Canvas(width, height)
    u = boxes.unit
    left, top, _, bottom = boxes.plot
    label_size = min(15 * u, 0.3 * (bottom - top) / len(boxes.level_y) + 4 * u)

    def level_lines(x0: float, x1: float):
        for y in boxes.level_y.values():
            canvas.line([(x0, y), (x1, y)], _GRID, 1)

    # Level axis: a faint line per level, "L<level>" and its stride on the left.
    level_lines(left - 12 * u, width - 12 * u)
    for level, y in boxes.level_y.items():
        canvas.text((28 * u, y - 0.4 * label_size), f"L{level}", label_size * 1.07)
        canvas.text((28 * u, y + 0.6 * label_size), f"stride {2 ** level}", label_size * 0.62, _MUTED)

    # The stem sits in a shaded band at the far left.
    stem = [i for i, node in nodes.items() if not node.inputs]
    if stem:
        x0 = min(boxes.box(i)[0] for i in stem) - 10 * u
        x1 = max(boxes.box(i)[2] for i in stem) + 10 * u
        canvas.rect((x0, top - 4 * u, x1, bottom + 4 * u), fill=_STEM_BAND, radius=8 * u)
        canvas.text(((x0 + x1) / 2, top + 2 * u), "stem", label_size * 0.8, _MUTED, anchor="mt")
        level_lines(x0, x1)

    # Connections under the boxes; greyed ones first, so live ones stay on top where they cross.
    arrow = max(5 * u, 0.16 * boxes.box_height)
    for edge in sorted(boxes.edges, key=lambda e: nodes[e.child].used):
        colour = EDGE_COLOUR if nodes[edge.child].used else UNUSED_EDGE_COLOUR
        extra = edge.kind == "extra"
        canvas.line(edge.points, colour, (1.6 if extra else 2.0) * u, dash=6 * u if extra else 0)
        canvas.arrowhead(edge.points, colour, arrow)

    # Blocks: type colour and letter, index under the letter; outputs get a thick outline and a P tag.
    letter_size = min(0.42 * boxes.box_height, 0.5 * boxes.box_width)
    for index, node in nodes.items():
        box, (cx, cy) = boxes.box(index), boxes.centres[index]
        fill = BLOCK_COLOURS[node.block_fn] if node.used else UNUSED_COLOUR
        ink = _TEXT if node.used else _MUTED
        if node.is_output:
            canvas.rect(box, fill=fill, outline=OUTPUT_COLOUR if node.used else _MUTED, width=OUTPUT_OUTLINE_WIDTH,
                        radius=4)
        else:
            canvas.rect(box, fill=fill, outline=_OUTLINE if node.used else _MUTED, width=1, radius=4)
        # The letter sits above the centre line and the index below it, so the centre shows the type colour.
        canvas.text((cx, cy - 2), BLOCK_LETTERS[node.block_fn], letter_size, ink, anchor="ms")
        canvas.text((cx, cy + 3), str(index), 0.72 * letter_size, ink, anchor="mt")
        if node.is_output:
            tag = f"P{node.level}"
            half = canvas.text_width(tag, boxes.tag_size) / 2 + 5 * u
            badge = (cx - half, box[1] - boxes.tag_size - 11 * u, cx + half, box[1] - 3 * u)
            canvas.rect(badge, fill=OUTPUT_COLOUR if node.used else _MUTED, radius=4 * u)
            canvas.text((cx, (badge[1] + badge[3]) / 2), tag, boxes.tag_size, _BACKGROUND)

    canvas.text((width / 2, 8 * u), title, 22 * u, anchor="mt")
    if subtitle:
        canvas.text((width / 2, 34 * u), subtitle, 13 * u, _MUTED, anchor="mt")
    _draw_legend(canvas, plan, (bottom + height) / 2 + 2 * u, u)
    return canvas.result()


def _draw_legend(canvas: _Canvas, plan: Sequence[BlockNode], y: float, u: float) -> None:
    """One centred row: the block types present, output, unused, and the kinds of connection."""
    items = [(block_fn, block_fn) for block_fn in BLOCK_COLOURS if any(node.block_fn == block_fn for node in plan)]
    items.append(("output", "output block (endpoint P<level>)"))
    if any(not node.used for node in plan):
        items.append(("unused", "unused (feeds no endpoint)"))
    items.append(("input", "cross-scale input (resampled)"))
    if any(node.extra_inputs for node in plan):
        items.append(("extra", "extra fusion input (summed as is)"))

    def total_width(u: float) -> float:
        return sum(38 * u + canvas.text_width(text, 12 * u) for _, text in items) + 26 * u * (len(items) - 1)

    u *= min(1.0, (canvas.size[0] - 16) / total_width(u))  # shrink to fit a narrow picture
    swatch, x = 30 * u, (canvas.size[0] - total_width(u)) / 2
    for kind, text in items:
        box = (x, y - 9 * u, x + swatch, y + 9 * u)
        if kind in BLOCK_COLOURS:
            canvas.rect(box, fill=BLOCK_COLOURS[kind], outline=_OUTLINE, radius=3 * u)
            canvas.text((x + swatch / 2, y + u), BLOCK_LETTERS[kind], 12 * u)
        elif kind == "output":
            canvas.rect(box, fill=_BACKGROUND, outline=OUTPUT_COLOUR, width=3 * u, radius=3 * u)
            canvas.text((x + swatch / 2, y + u), "P", 11 * u, OUTPUT_COLOUR)
        elif kind == "unused":
            canvas.rect(box, fill=UNUSED_COLOUR, outline=_MUTED, radius=3 * u)
        else:
            points = [(x + 2 * u + (swatch - 4 * u) * t / 10, y) for t in range(11)]
            solid = kind == "input"
            canvas.line(points, EDGE_COLOUR, (2.0 if solid else 1.6) * u, dash=0 if solid else 5 * u)
            canvas.arrowhead(points, EDGE_COLOUR, 6 * u)
        canvas.text((x + swatch + 8 * u, y + u), text, 12 * u, anchor="lm")
        x += 38 * u + canvas.text_width(text, 12 * u) + 26 * u
