"""mlres: multi-level residual networks from the dynamical systems view (Chang et al., ICLR 2018)."""
from mlres.interpolate import (OPERATORS, architecture, coarsen, drop_block, grow_opt_state, h_factor,
                               interpolate)
from mlres.model import RESNET_WIDTHS, WIDE_RESNET_WIDTHS, ResNet, count_params
from mlres.schedules import relative_cost, theoretical_time_saved
from mlres.stacks import ResidualStack, Stack, stack_sizes, to_list, to_scanned
from mlres.vit import ViT

__all__ = ['OPERATORS', 'ResNet', 'RESNET_WIDTHS', 'ResidualStack', 'Stack', 'ViT', 'WIDE_RESNET_WIDTHS',
           'architecture', 'coarsen', 'count_params', 'drop_block', 'grow_opt_state', 'h_factor',
           'interpolate', 'relative_cost', 'stack_sizes', 'theoretical_time_saved', 'to_list', 'to_scanned']
