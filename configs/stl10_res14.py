"""ResNet-14 on STL-10 (2-2-2), the first-cycle model of Table 3."""
from mlres.config import paper


def get_config():
  return paper('stl10', 'res14')
