"""ResNet-14 on CIFAR-100 (2-2-2), the first-cycle model of Table 3."""
from mlres.config import paper


def get_config():
  return paper('cifar100', 'res14')
