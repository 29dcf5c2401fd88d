"""Tests of `spinenet_tf.visualization.network`: plans of named backbones, layout and the drawn picture."""

from absl.testing import parameterized
from PIL import Image

import spinenet_tf
from spinenet_tf.visualization import network

_SIZES = ((1600, 600), (1000, 420))


def _close(pixel, colour, tolerance: int = 3) -> bool:
    return max(abs(a - b) for a, b in zip(pixel, colour)) <= tolerance


def _near(image: Image.Image, x: float, y: float, colour, tolerance: int = 40) -> bool:
    """Whether a pixel within 1 of (x, y) has about `colour` (lines are anti-aliased)."""
    return any(_close(image.getpixel((round(x) + dx, round(y) + dy)), colour, tolerance)
               for dx in (-1, 0, 1) for dy in (-1, 0, 1))


class PlanTest(parameterized.TestCase):

    @parameterized.parameters("spinenet-49s", "spinenet-mobile-49xs")
    def test_plan_matches_the_built_backbone(self, name):
        # One per family: the picture must show exactly what `build_backbone` wires (stem, widths, extras).
        built = spinenet_tf.build_backbone(name, input_shape=(128, 128, 3))
        self.assertEqual(network.plan_for_model(name), built.plan)

    def test_spinenet49_golden_wiring(self):
        plan = network.plan_for_model("spinenet-49")
        self.assertLen(plan, 18)  # 2 stem + the 16 rows of SPINENET_BLOCK_SPECS
        # Block 17 (Model Garden's level-2 output) feeds no endpoint of P3-P7.
        self.assertEqual([node.index for node in plan if not node.used], [17])
        # Block 11 (L5 bottleneck) is consumed by neither 12 (inputs 5, 10) nor 13 (4, 10), so the L5 output 14
        # sums it in; no other output block has an unconsumed same-level, same-width block before it.
        self.assertEqual({node.index: node.extra_inputs for node in plan if node.extra_inputs}, {14: (11,)})
        self.assertEqual({node.level: node.index for node in plan if node.is_output},
                         {4: 12, 3: 13, 5: 14, 7: 15, 6: 16, 2: 17})

    def test_unknown_model_lists_valid_names(self):
        with self.assertRaisesRegex(ValueError, "unknown backbone 'spinenet-50'.*spinenet-mobile-49xs"):
            network.plan_for_model("spinenet-50")


class LayoutTest(parameterized.TestCase):

    @parameterized.product(name=["spinenet-49", "spinenet-mobile-49"], size=_SIZES)
    def test_blocks_left_to_right_and_by_level(self, name, size):
        plan = network.plan_for_model(name)
        boxes = network.layout(plan, *size)
        xs = [boxes.centres[node.index][0] for node in plan]
        self.assertEqual(xs, sorted(xs))
        self.assertLen(set(xs), len(xs))  # one column per block, in table order
        for a in plan:
            for b in plan:
                ya, yb = boxes.centres[a.index][1], boxes.centres[b.index][1]
                if a.level > b.level:
                    self.assertLess(ya, yb, f"block {a.index} (L{a.level}) not above {b.index} (L{b.level})")
                elif a.level == b.level:
                    self.assertEqual(ya, yb)
        stem = [node.index for node in plan if not node.inputs]
        self.assertEqual(stem, [0, 1])
        self.assertEqual(sorted(boxes.centres, key=lambda i: boxes.centres[i][0])[:2], stem)  # far left
        for index in boxes.centres:
            x0, y0, x1, y1 = boxes.box(index)
            self.assertTrue(0 < x0 < x1 < size[0] and 0 < y0 < y1 < size[1], f"block {index} off the picture")

    def test_levels_span_the_plan(self):
        self.assertEqual(sorted(network.layout(network.plan_for_model("spinenet-49")).level_y),
                         [2, 3, 4, 5, 6, 7])
        self.assertEqual(sorted(network.layout(network.plan_for_model("spinenet-mobile-49")).level_y),
                         [1, 2, 3, 4, 5, 6, 7])

    def test_one_edge_per_connection(self):
        plan = network.plan_for_model("spinenet-49")
        edges = {(e.parent, e.child, e.kind) for e in network.layout(plan).edges}
        expected = {(0, 1, "stem")}
        for node in plan:
            expected |= {(p, node.index, "input") for p in node.inputs}
            expected |= {(p, node.index, "extra") for p in node.extra_inputs}
        self.assertEqual(edges, expected)


class DrawNetworkTest(parameterized.TestCase):

    def _draw(self, name, size):
        plan = network.plan_for_model(name)
        return plan, network.layout(plan, *size), network.draw_network(plan, name, *size)

    @parameterized.product(name=["spinenet-49", "spinenet-mobile-49xs"], size=_SIZES)
    def test_block_colours_and_output_markers(self, name, size):
        plan, boxes, image = self._draw(name, size)
        self.assertEqual(image.size, size)
        for node in plan:
            x, y = boxes.centres[node.index]
            want = network.BLOCK_COLOURS[node.block_fn] if node.used else network.UNUSED_COLOUR
            self.assertTrue(_close(image.getpixel((round(x), round(y))), want),
                            f"block {node.index}: centre {image.getpixel((round(x), round(y)))}, want {want}")
            if not node.used:
                continue
            # Just inside the top edge: the thick output outline, or the fill under a 1-pixel outline.
            x0, y0, x1, y1 = boxes.box(node.index)
            edge_pixel = image.getpixel((round(x), round(y0) + 2))
            # The P tag sits right above the box: count tag-coloured pixels in a row under its text.
            strip = [image.getpixel((round(x0) + dx, round(y0) - 5)) for dx in range(round(x1 - x0))]
            tag_pixels = sum(_close(p, network.OUTPUT_COLOUR, 10) for p in strip)
            if node.is_output:
                self.assertTrue(_close(edge_pixel, network.OUTPUT_COLOUR), f"block {node.index}: no outline")
                self.assertGreater(tag_pixels, len(strip) // 4, f"block {node.index}: no P tag")
            else:
                self.assertTrue(_close(edge_pixel, want), f"block {node.index}: output outline on a plain block")
                self.assertEqual(tag_pixels, 0, f"block {node.index}: P tag on a plain block")

    def test_unused_block_is_grey_with_grey_inputs(self):
        plan, boxes, image = self._draw("spinenet-49", (1600, 600))
        x, y = boxes.centres[17]
        self.assertTrue(_close(image.getpixel((round(x), round(y))), network.UNUSED_COLOUR))
        into_17 = [edge for edge in boxes.edges if edge.child == 17]
        self.assertLen(into_17, 2)
        for edge in into_17:
            self.assertTrue(_near(image, *edge.points[len(edge.points) // 2], network.UNUSED_EDGE_COLOUR),
                            f"edge {edge.parent}->17 is not grey")

    def test_edges_are_drawn(self):
        plan, boxes, image = self._draw("spinenet-49", (1600, 600))
        rects = [boxes.box(i) for i in boxes.centres]
        for edge in boxes.edges:
            if edge.kind == "extra" or edge.child == 17:
                continue
            free = [(x, y) for x, y in edge.points[2:-2]
                    if not any(x0 - 4 <= x <= x1 + 4 and y0 - 30 <= y <= y1 + 4 for x0, y0, x1, y1 in rects)]
            self.assertTrue(any(_near(image, x, y, network.EDGE_COLOUR) for x, y in free),
                            f"edge {edge.parent}->{edge.child} not drawn")

    def test_too_small_is_refused(self):
        with self.assertRaisesRegex(ValueError, "at least 800x300"):
            network.draw_network(network.plan_for_model("spinenet-49"), "x", 400, 200)
