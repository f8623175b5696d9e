"""ResNet-32 on CIFAR-100 (5-5-5), the first-cycle model of Table 3."""
from mlres.config import paper


def get_config():
  return paper('cifar100', 'res32')
