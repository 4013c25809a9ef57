"""DropBlock's mask: which units `keras_drop.ops.drop_block` drops.

- `gamma`: the seed probability that gives the requested drop rate.
- `sampling`: block seeds drawn densely or sparsely.
- `dilation`: seeds grown into blocks.
- `construction`: the choice of sampling and dilation per backend and
  shape (with its measurements), and the mask built with it.

Private: only `keras_drop.ops` uses it.
"""
