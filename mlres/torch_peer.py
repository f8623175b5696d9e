"""The benchmark's PyTorch peers of the ResNet and the GPT: the network and the trainer's step,
eager and torch.compile'd.

As mlres.model: pre-activation blocks, residual times h, parameter-free shortcuts. As mlres.gpt:
pre-LayerNorm blocks Y + h MHA(LN(Y)), then + h MLP(LN(Y)) with tanh GELU, learned positions, a final
LayerNorm and an untied head, causal attention; LayerNorm's epsilon is flax's 1e-6, and one (width,
3 width) projection holds the query, key and value kernels and biases of flax's three. As the
trainer: the config's optimizer (SGD with coupled L2, or AdamW's decoupled decay) on the kernels
and embeddings only, the ResNet's augmentation on the device in the step, the GPT's windows of
context + 1 bytes at offsets drawn as mlres.data.text draws them. Initializations are PyTorch's
own: they change no step's cost. bf16 is autocast; the ResNet's memory is channels-last (the faster
layout for PyTorch's convolutions). Imports torch: mlres.bench imports this module only for
--peer=torch, so that PyTorch stays optional.
"""
from __future__ import annotations

import itertools
import math
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from mlres import report
from mlres.data import text


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


class DecoderBlock(nn.Module):
  """mlres.transformer.Block with causal=True: Y + h MHA(LN(Y)), then + h MLP(LN(·))."""

  def __init__(self, width: int, num_heads: int, mlp_dim: int):
    super().__init__()
    self.num_heads = num_heads
    self.norm1, self.norm2 = nn.LayerNorm(width, eps=1e-6), nn.LayerNorm(width, eps=1e-6)
    self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
    self.mlp1, self.mlp2 = nn.Linear(width, mlp_dim), nn.Linear(mlp_dim, width)

  def forward(self, y, h):
    b, t, width = y.shape
    q, k, v = self.qkv(self.norm1(y)).view(b, t, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
    a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, width)
    y = y + h * self.out(a)
    return y + h * self.mlp2(F.gelu(self.mlp1(self.norm2(y)), approximate='tanh'))


class Decoder(nn.Module):
  """mlres.gpt.GPT: logits (B, T, vocab_size) of the next byte at every position of (B, T) bytes."""

  def __init__(self, num_blocks: int, width: int, num_heads: int, mlp_dim: int, context: int,
               vocab_size: int, h: float):
    super().__init__()
    self.embed = nn.Embedding(vocab_size, width)
    self.pos_embed = nn.Parameter(0.02 * torch.randn(context, width))
    self.blocks = nn.ModuleList(DecoderBlock(width, num_heads, mlp_dim) for _ in range(num_blocks))
    self.norm, self.head = nn.LayerNorm(width, eps=1e-6), nn.Linear(width, vocab_size)
    self.register_buffer('h', torch.tensor(h))

  def forward(self, tokens):
    y = self.embed(tokens) + self.pos_embed[:tokens.shape[1]]
    for block in self.blocks:
      y = block(y, self.h)
    return self.head(self.norm(y))


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


def resnet(config, ds, stage_sizes, h: float, device):
  """The ResNet (a new one per call of the first), the loss of the step's batch (the epoch's
  shuffled images, augmented in the step) and the images per step."""
  images = torch.from_numpy(ds.train_images).to(device)
  labels = torch.from_numpy(ds.train_labels).long().to(device)
  mean, std = torch.from_numpy(ds.mean).to(device), torch.from_numpy(ds.std).to(device)
  batch = config.batch_size
  per_epoch = len(labels) // batch
  order = torch.randperm(len(labels), device=device)[:per_epoch * batch].view(per_epoch, batch)

  def loss(forward, step: int):
    idx = order[step % per_epoch]
    x = augment(images[idx], config.augment.pad, config.augment.flip, mean, std)
    return F.cross_entropy(forward(x), labels[idx])

  net = lambda: Net(ds.train_images.shape[-1], stage_sizes, tuple(config.model.widths),
                    ds.num_classes, h).to(device, memory_format=torch.channels_last)
  return net, loss, batch


def gpt(config, ds, stage_sizes, h: float, device):
  """The decoder, the loss of the step's windows (offsets drawn as mlres.data.text.draw_offsets
  draws them, for an epoch of text.steps_per_epoch) and the tokens per step."""
  m, batch = config.model, config.batch_size
  train = torch.tensor(ds.train, device=device)  # a copy: the corpus is read-only
  per_epoch = config.text.steps_per_epoch
  offsets = torch.randint(0, len(train) - m.context, (per_epoch, batch, 1), device=device)
  span = torch.arange(m.context + 1, device=device)

  def loss(forward, step: int):
    window = train[offsets[step % per_epoch] + span].long()
    return F.cross_entropy(forward(window[:, :-1]).flatten(0, 1), window[:, 1:].flatten())

  net = lambda: Decoder(stage_sizes[0], m.width, m.num_heads, m.mlp_dim, m.context, text.VOCAB_SIZE,
                        h).to(device)
  return net, loss, batch * m.context


def optimizer(model, o):
  """The config's optimizer: weight decay on the kernels and embeddings (the parameters of two or
  more dimensions: mlres.train.DECAYED), never on biases and norm scales."""
  params = [[p for p in model.parameters() if (p.ndim > 1) == decayed] for decayed in (True, False)]
  groups = [{'params': params[0]}, {'params': params[1], 'weight_decay': 0.0}]
  if o.name == 'adamw':
    return torch.optim.AdamW(groups, lr=o.eta_max, betas=(o.b1, o.b2), eps=o.eps,
                             weight_decay=o.weight_decay)
  return torch.optim.SGD(groups, lr=o.eta_max, momentum=o.momentum, weight_decay=o.weight_decay)


def time_steps(config, ds, stage_sizes, h: float, steps: int, warmup: int, jax_ms: float,
               repeats: int, rate: str) -> list[dict]:
  """The eager and (where torch has it) the torch.compile'd step timed on the same data: the
  median ms of `repeats` batches of steps, their throughput (`rate`: images or tokens per second)
  and their time over JAX's `jax_ms`.

  On a CPU, torch runs as many threads as XLA's CPU client does: one per CPU this process may run
  on (os.sched_getaffinity), so that both share the same cores.
  """
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  if device == 'cpu':
    torch.set_num_threads(len(os.sched_getaffinity(0)))
  torch.manual_seed(config.seed)
  build = gpt if config.model.name == 'gpt' else resnet
  net, loss_of, units = build(config, ds, stage_sizes, h, device)

  def measure(compiled: bool) -> dict:
    model = net()
    opt = optimizer(model, config.optimizer)
    forward = torch.compile(model, mode='reduce-overhead') if compiled else model
    counter = itertools.count()

    def run(count):
      for _ in range(count):
        with torch.autocast(device, torch.bfloat16, enabled=config.model.dtype == 'bfloat16'):
          loss = loss_of(forward, next(counter))
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
            rate: units / step_ms * 1e3, 'jax_speedup': step_ms / jax_ms}

  common = {'num_params': sum(p.numel() for p in net().parameters()),
            'torch_version': torch.__version__, 'torch_threads': torch.get_num_threads(),
            'torch_device': torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}
  out = [{**common, 'implementation': 'PyTorch eager', **measure(False)}]
  if hasattr(torch, 'compile'):
    common['implementation'] = "torch.compile(mode='reduce-overhead')"
    try:
      out.append({**common, **measure(True)})
    except Exception as e:  # a failing compiler backend must not lose the numbers already taken
      out.append({**common, 'error': report.error_line(e)})
  return out
