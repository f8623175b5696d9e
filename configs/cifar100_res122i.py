"""ResNet-122-i on CIFAR-100 (5-5-5 -> 10-10-10 -> 20-20-20), the multi-level model of Table 3."""
from mlres.config import paper


def get_config():
  return paper('cifar100', 'res122i')
