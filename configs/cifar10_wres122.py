"""WResNet-122 on CIFAR-10 (20-20-20), the last-cycle model of Table 4."""
from mlres.config import paper


def get_config():
  return paper('cifar10', 'wres122')
