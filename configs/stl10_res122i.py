"""ResNet-122-i on STL-10 (5-5-5 -> 10-10-10 -> 20-20-20), the multi-level model of Table 3."""
from mlres.config import paper


def get_config():
  return paper('stl10', 'res122i')
