"""ResNet-32 on STL-10 (5-5-5), the first-cycle model of Table 3."""
from mlres.config import paper


def get_config():
  return paper('stl10', 'res32')
