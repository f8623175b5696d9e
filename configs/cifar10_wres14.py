"""WResNet-14 on CIFAR-10 (2-2-2), the first-cycle model of Table 4."""
from mlres.config import paper


def get_config():
  return paper('cifar10', 'wres14')
