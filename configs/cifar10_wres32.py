"""WResNet-32 on CIFAR-10 (5-5-5), the first-cycle model of Table 4."""
from mlres.config import paper


def get_config():
  return paper('cifar10', 'wres32')
