"""mlres: multi-level residual networks from the dynamical systems view (Chang et al., ICLR 2018).

The models (ResNet, ViT, GPT) and the growth between training cycles (mlres.growth: deeper by
`interpolate`, wider by `widen`, the optimizer's state with them) are named here; the trainer is
mlres.train, its commands mlres.main and mlres.analyze; `state_specs` lays any of their trees out
over a device mesh (mlres.sharding)."""
from mlres.gpt import GPT
from mlres.growth.depth import (OPERATORS, architecture, coarsen, drop_block, h_factor, interpolate,
                                stack_sizes)
from mlres.growth.nnx_trees import StepSize
from mlres.growth.nnx_optimizer import grow, grow_optimizer, grow_wider
from mlres.growth.optimizer import grow_opt_state, widen_opt_state
from mlres.growth.stacks import ResidualStack, Stack, to_list, to_scanned
from mlres.growth.width import OPERATORS as WIDEN_OPERATORS, widen, width_fields
from mlres.growth.width_roles import Roles
from mlres.model import RESNET_WIDTHS, WIDE_RESNET_WIDTHS, ResNet, count_params
from mlres.schedules import relative_cost, theoretical_time_saved
from mlres.sharding import state_specs
from mlres.vit import ViT

__all__ = ['GPT', 'OPERATORS', 'ResNet', 'RESNET_WIDTHS', 'ResidualStack', 'Roles', 'Stack', 'StepSize',
           'ViT', 'WIDE_RESNET_WIDTHS', 'WIDEN_OPERATORS', 'architecture', 'coarsen', 'count_params',
           'drop_block', 'grow', 'grow_opt_state', 'grow_optimizer', 'grow_wider', 'h_factor', 'interpolate',
           'relative_cost', 'stack_sizes', 'state_specs', 'theoretical_time_saved', 'to_list', 'to_scanned', 'widen',
           'widen_opt_state', 'width_fields']
