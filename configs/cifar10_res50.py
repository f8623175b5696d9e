"""ResNet-50 on CIFAR-10 (8-8-8), the last-cycle model of Table 3."""
from mlres.config import paper


def get_config():
  return paper('cifar10', 'res50')
