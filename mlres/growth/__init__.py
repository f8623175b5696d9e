"""Growing a network between training cycles, deeper and wider, with its optimizer's state: pure maps
of a model's variables (Linen trees, one collection, a params-shaped tree) or of a Flax NNX module.

- `depth`: `interpolate` (four operators), `coarsen`, `drop_block`; `architecture` and
  `stack_sizes` read a tree's depth back.
- `width`: `widen` ('clone', 'zero'); `width_fields` reads a tree's widths back.
- `stacks`: where the residual blocks are (list and scanned layouts), `ResidualStack`, `Stack`.
- `width_roles`: which axes of which leaves are widths (`Roles`; the ResNet's, ViT's and GPT's).
- `nnx_trees`: an NNX module's state as the trees the maps take, and back (`StepSize`).
- `optimizer`: an optax state through either map (`grow_opt_state`, `widen_opt_state`).
- `nnx_optimizer`: an NNX model with its ``nnx.Optimizer`` (`grow`, `grow_optimizer`, `grow_wider`).

The names users call are the package mlres's own (``mlres.interpolate``, ``mlres.widen``, ...).
"""
