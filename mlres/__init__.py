"""mlres: multi-level residual networks from the dynamical systems view (Chang et al., ICLR 2018)."""
from mlres.gpt import GPT
from mlres.interpolate import (OPERATORS, architecture, coarsen, drop_block, grow_opt_state, h_factor,
                               interpolate, stack_sizes)
from mlres.model import RESNET_WIDTHS, WIDE_RESNET_WIDTHS, ResNet, count_params
from mlres.nnx_growth import grow, grow_optimizer
from mlres.nnx_state import StepSize
from mlres.schedules import relative_cost, theoretical_time_saved
from mlres.stacks import ResidualStack, Stack, to_list, to_scanned
from mlres.vit import ViT
from mlres.widen import OPERATORS as WIDEN_OPERATORS, widen, width_fields
from mlres.width_roles import Roles
from mlres.width_state import grow_wider, widen_opt_state

__all__ = ['GPT', 'OPERATORS', 'ResNet', 'RESNET_WIDTHS', 'ResidualStack', 'Roles', 'Stack', 'StepSize',
           'ViT', 'WIDE_RESNET_WIDTHS', 'WIDEN_OPERATORS', 'architecture', 'coarsen', 'count_params',
           'drop_block', 'grow', 'grow_opt_state', 'grow_optimizer', 'grow_wider', 'h_factor', 'interpolate',
           'relative_cost', 'stack_sizes', 'theoretical_time_saved', 'to_list', 'to_scanned', 'widen',
           'widen_opt_state', 'width_fields']
