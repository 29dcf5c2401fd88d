"""Architecture search for scale-permuted backbones (SpineNet paper, arXiv:1912.05027 §3, §5.1, §5.5).

`spaces`: the paper's search spaces in PyGlove (SpineNet's, the R[N]-SP[M] family's, and a SpineNet-Mobile one);
every point materialises to a validated block-spec table and stem (`Architecture`). `ablation`: the paper's three
connection damages (§5.5, Table 9) as functions from table to table. The spaces are PyGlove hyper values
(`pyglove`, an install requirement), so PyGlove's samplers and evolution search them unchanged.
"""

from spinenet_tf.search.spaces import SPACES, Architecture, SearchSpace, SpaceSize, get_space

__all__ = ["SPACES", "Architecture", "SearchSpace", "SpaceSize", "get_space"]
