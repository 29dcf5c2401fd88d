"""Architecture search for scale-permuted backbones (SpineNet paper, arXiv:1912.05027 §3, §5.1, §5.5).

`spaces`: the paper's search spaces in PyGlove (SpineNet's, the R[N]-SP[M] family's, and a SpineNet-Mobile one);
every point materialises to a validated block-spec table and stem (`Architecture`). `ablation`: the paper's three
connection damages (§5.5, Table 9) as functions from table to table. `run`: the search loop (regularized evolution or
random sampling, trials on disk, resume, parallel trial processes). `proxy`: the reward of a short RetinaNet training
run (§5.1's proxy task). `python -m spinenet_tf.search` (`__main__`) is the command. The spaces are PyGlove hyper
values (`pyglove`, an install requirement), so PyGlove's samplers and evolution search them unchanged.
"""

from spinenet_tf.search.spaces import SPACES, Architecture, SearchSpace, SpaceSize, get_space

__all__ = ["SPACES", "Architecture", "SearchSpace", "SpaceSize", "get_space"]
