"""WResNet-50-i on CIFAR-10 (2-2-2 -> 4-4-4 -> 8-8-8), the multi-level model of Table 4."""
from mlres.config import paper


def get_config():
  return paper('cifar10', 'wres50i')
