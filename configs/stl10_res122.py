"""ResNet-122 on STL-10 (20-20-20), the last-cycle model of Table 3."""
from mlres.config import paper


def get_config():
  return paper('stl10', 'res122')
