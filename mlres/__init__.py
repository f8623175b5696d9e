"""mlres: multi-level residual networks from the dynamical systems view (Chang et al., ICLR 2018)."""
from mlres.interpolate import architecture, coarsen, drop_block, interpolate
from mlres.model import RESNET_WIDTHS, WIDE_RESNET_WIDTHS, ResNet, count_params
from mlres.schedules import relative_cost, theoretical_time_saved

__all__ = ['ResNet', 'RESNET_WIDTHS', 'WIDE_RESNET_WIDTHS', 'architecture', 'coarsen', 'count_params',
           'drop_block', 'interpolate', 'relative_cost', 'theoretical_time_saved']
