"""The benchmark's PyTorch peer: the network and SGD step of mlres, eager and torch.compile'd.

As mlres.model: pre-activation blocks, residual times h, parameter-free shortcuts. As the trainer:
augmentation on the device in the step, coupled L2 on conv and dense kernels only. bf16 is
autocast; memory is channels-last (the faster layout for PyTorch's convolutions). Imports torch:
mlres.bench imports this module only for --peer=torch, so that PyTorch stays optional.
"""
from __future__ import annotations

import itertools
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from mlres import report


class Block(nn.Module):
  """A pre-activation block; a downsampling one strides its first conv and zero-pads the shortcut."""

  def __init__(self, width_in: int, width: int, stride: int):
    super().__init__()
    self.stride, self.extra = stride, width - width_in
    self.norm1, self.norm2 = nn.BatchNorm2d(width_in), nn.BatchNorm2d(width)  # flax momentum 0.9
    self.conv1 = nn.Conv2d(width_in, width, 3, stride, 1, bias=False)
    self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)

  def forward(self, y, h):
    f = self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm1(y))))))
    return F.pad(y[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, 0, self.extra)) + h * f


class Net(nn.Module):
  """mlres.model.ResNet of `stage_sizes` and `widths` with step size h."""

  def __init__(self, channels: int, stage_sizes, widths, num_classes: int, h: float):
    super().__init__()
    self.stem = nn.Conv2d(channels, widths[0], 3, 1, 1, bias=False)
    self.blocks = nn.ModuleList(Block(w if b else widths[max(s - 1, 0)], w, 2 if s and not b else 1)
                                for s, (n, w) in enumerate(zip(stage_sizes, widths)) for b in range(n))
    self.norm, self.head = nn.BatchNorm2d(widths[-1]), nn.Linear(widths[-1], num_classes)
    self.register_buffer('h', torch.tensor(h))

  def forward(self, x):
    y = self.stem(x)
    for block in self.blocks:
      y = block(y, self.h)
    return self.head(F.relu(self.norm(y)).mean((2, 3)))


def augment(x, pad: int, flip: bool, mean, std):
  """uint8 NHWC -> random crop of the padded image and flip, standardized NCHW (channels-last in
  memory), as the trainer's augmentation."""
  b, height, width, _ = x.shape
  device = x.device
  if pad:
    x = F.pad(x, (0, 0, pad, pad, pad, pad))
    at = torch.randint(0, 2 * pad + 1, (b, 2), device=device)
    rows = at[:, :1] + torch.arange(height, device=device)
    cols = at[:, 1:] + torch.arange(width, device=device)
    x = x[torch.arange(b, device=device)[:, None, None], rows[:, :, None], cols[:, None, :]]
  if flip:
    x = torch.where(torch.rand(b, 1, 1, 1, device=device) < 0.5, x.flip(2), x)
  return ((x.float() - mean) / std).permute(0, 3, 1, 2)


def time_steps(config, ds, stage_sizes, h: float, steps: int, warmup: int, jax_ms: float,
               repeats: int) -> list[dict]:
  """The eager and (where torch has it) the torch.compile'd step timed on the same data: the
  median ms of `repeats` batches of steps, beside JAX's `jax_ms`."""
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  widths, o = tuple(config.model.widths), config.optimizer
  net = lambda: Net(ds.train_images.shape[-1], stage_sizes, widths, ds.num_classes, h)
  torch.manual_seed(config.seed)
  images = torch.from_numpy(ds.train_images).to(device)
  labels = torch.from_numpy(ds.train_labels).long().to(device)
  mean, std = torch.from_numpy(ds.mean).to(device), torch.from_numpy(ds.std).to(device)
  batch = config.batch_size
  per_epoch = len(labels) // batch
  order = torch.randperm(len(labels), device=device)[:per_epoch * batch].view(per_epoch, batch)

  def measure(compiled: bool) -> dict:
    model = net().to(device, memory_format=torch.channels_last)
    kernels = [p for p in model.parameters() if p.ndim > 1]
    others = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{'params': kernels}, {'params': others, 'weight_decay': 0.0}],
                          lr=o.eta_max, momentum=o.momentum, weight_decay=o.weight_decay)
    forward = torch.compile(model, mode='reduce-overhead') if compiled else model
    counter = itertools.count()

    def run(count):
      for _ in range(count):
        idx = order[next(counter) % per_epoch]
        with torch.autocast(device, torch.bfloat16, enabled=config.model.dtype == 'bfloat16'):
          x = augment(images[idx], config.augment.pad, config.augment.flip, mean, std)
          loss = F.cross_entropy(forward(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
      if device == 'cuda':
        torch.cuda.synchronize()

    t = time.perf_counter()
    run(1)
    first = time.perf_counter() - t
    run(max(warmup, 3))  # CUDA graphs are recorded on the second and third call
    count, seconds = math.ceil(steps / repeats), []
    for _ in range(repeats):
      t = time.perf_counter()
      run(count)
      seconds.append((time.perf_counter() - t) / count)
    step_ms = 1e3 * statistics.median(seconds)
    return {'compile_seconds': first if compiled else None, 'step_ms': step_ms,
            'images_per_second': batch / step_ms * 1e3, 'jax_speedup': step_ms / jax_ms}

  common = {'stage_sizes': list(stage_sizes), 'widths': list(widths), 'dtype': config.model.dtype,
            'num_params': sum(p.numel() for p in net().parameters()),
            'batch': batch, 'torch_version': torch.__version__,
            'torch_device': torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}
  out = [{**common, 'implementation': 'PyTorch eager', **measure(False)}]
  if hasattr(torch, 'compile'):
    common['implementation'] = "torch.compile(mode='reduce-overhead')"
    try:
      out.append({**common, **measure(True)})
    except Exception as e:  # a failing compiler backend must not lose the numbers already taken
      out.append({**common, 'error': report.error_line(e)})
  return out
