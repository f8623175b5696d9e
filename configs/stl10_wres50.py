"""WResNet-50 on STL-10 (8-8-8), the last-cycle model of Table 4."""
from mlres.config import paper


def get_config():
  return paper('stl10', 'wres50')
