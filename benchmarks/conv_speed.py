"""Where a demo training step goes, and what the single-pixel fast path saves.

Prints, on one CPU thread (the unit the time budgets are stated in), the median time of
  1. one 3x3 convolution, forward + backward, on (32, C, s, s) maps of the demo's ResNet-18
     stages at 24 px (oneDNN), and the same product as a linear layer where s = 1;
  2. one demo training step (ResNet-18, batch 32 of 3x24x24, forward + backward + fused Adam)
     and one evaluation forward of 250 images, with plain convolutions and with
     ``dml_core.models.pixel_conv`` (the trunk ``build_backbone`` returns), in the default and
     the channels-last layout;
  3. the fast-path step before and after ``dml_core.core.allocator.keep_freed_memory``.
It also checks that both networks give the same outputs and gradients (to float rounding).

    .venv/bin/python benchmarks/conv_speed.py
"""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
import torchvision

from dml_core.models.pixel_conv import use_pixel_convs


def median_ms(fn, repeats: int = 7, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def conv_shapes() -> None:
    print("3x3 convolution, forward + backward, batch 32 (ms):")
    for c, s in ((64, 6), (128, 3), (256, 2), (512, 1)):
        x = torch.randn(32, c, s, s, requires_grad=True)
        w = torch.randn(c, c, 3, 3, requires_grad=True)
        conv = median_ms(lambda: F.conv2d(x, w, padding=1).sum().backward())
        line = f"  {c:3d} channels, {s}x{s} map: conv2d {conv:6.1f}"
        if s == 1:
            lin = median_ms(lambda: F.linear(x.flatten(1), w[:, :, 1, 1]).sum().backward())
            line += f"   as a linear layer (centre tap) {lin:5.1f}"
        print(line)


def steps() -> None:
    torch.manual_seed(0)
    plain = torchvision.models.resnet18(num_classes=64)
    fast = torchvision.models.resnet18(num_classes=64)
    fast.load_state_dict(plain.state_dict())
    use_pixel_convs(fast)
    x = torch.randn(32, 3, 24, 24)
    ya, yb = plain(x), fast(x)
    ya.square().mean().backward()
    yb.square().mean().backward()
    grad = max((p.grad - q.grad).abs().max().item()
               for p, q in zip(plain.parameters(), fast.parameters()))
    print(f"same network: max |output difference| {(ya - yb).abs().max().item():.1e}, "
          f"max |gradient difference| {grad:.1e}")
    print("ResNet-18 at 24 px, one thread (ms): training step (batch 32) | eval forward (250)")
    for name, model in (("plain convolutions", plain), ("pixel_conv fast path", fast)):
        for layout in ("default", "channels_last"):
            m = model.to(memory_format=torch.channels_last) if layout != "default" else model
            xb = x.contiguous(memory_format=torch.channels_last) if layout != "default" else x
            xe = torch.randn(250, 3, 24, 24)
            xe = xe.contiguous(memory_format=torch.channels_last) if layout != "default" else xe
            opt = torch.optim.Adam(m.parameters(), 1e-4, fused=True)

            def step():
                opt.zero_grad()
                m(xb).square().mean().backward()
                opt.step()

            def forward():
                m.eval()
                with torch.no_grad():
                    m(xe)
                m.train()

            print(f"  {name:22s} {layout:13s} {median_ms(step):6.0f} | "
                  f"{median_ms(forward, repeats=3):6.0f}")
            m.to(memory_format=torch.contiguous_format)


def allocator() -> None:
    """The same step after dml_core.core.allocator.keep_freed_memory() (process-wide, so last)."""
    from dml_core.core.allocator import keep_freed_memory

    torch.manual_seed(0)
    model = use_pixel_convs(torchvision.models.resnet18(num_classes=64))
    opt = torch.optim.Adam(model.parameters(), 1e-4, fused=True)
    x = torch.randn(32, 3, 24, 24)

    def step():
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()

    before = median_ms(step)
    kept = keep_freed_memory()
    after = median_ms(step)
    print(f"pixel_conv step, default layout: {before:.0f} ms with glibc's default thresholds, "
          f"{after:.0f} ms after keep_freed_memory() (set: {kept})")


if __name__ == "__main__":
    torch.set_num_threads(1)
    conv_shapes()
    steps()
    allocator()
