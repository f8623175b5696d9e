"""ResNet-122 on CIFAR-100 (20-20-20), the last-cycle model of Table 3."""
from mlres.config import paper


def get_config():
  return paper('cifar100', 'res122')
