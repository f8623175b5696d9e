"""WResNet-50 on CIFAR-100 (8-8-8), the last-cycle model of Table 4."""
from mlres.config import paper


def get_config():
  return paper('cifar100', 'wres50')
