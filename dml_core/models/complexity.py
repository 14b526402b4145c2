"""Parameter and MAC counts, measured with ``torch.utils.flop_counter`` (not thop, unmaintained).

Two conventions for MACs (multiply-accumulates; FLOPs = 2 × MACs):

- ``"torch"`` (default): what :class:`~torch.utils.flop_counter.FlopCounterMode` counts, halved:
  convolutions and matmuls (Linear, the proxy matmul) only. The honest cost of the network.
- ``"thop"``: the authors' tables (``thop.profile`` ~0.0.31 + ``clever_format``), reproduced with
  forward hooks on LEAF modules, in eval mode, counting per module:
    Conv:            out.numel × (C_in/groups × k_h × k_w + [1 if bias])
    Linear:          out.numel × (2·in − 1)          (mul + add; i.e. ~2× the true MACs)
    BatchNorm1d/2d:  2 × in.numel                    (subtract, divide)
    AvgPool2d / AdaptiveAvgPool2d: out.numel × (kernel area + 1)
    everything else: 0 (ReLU, max pools, dropout, and every custom or functional op: LayerNorm
                     without affine, F.normalize, GeM, CGD's descriptors, residual additions,
                     and the custom ``ProxyLinear`` of the seeds, whose FLOPs thop missed).
  The Linear and BN rules are the ones the printed numbers require: the BN term is what lifts
  ResNet-50 from 4.09 to 4.12 G, and CGD's FLOPs grow by 2·2048 per class (10.64 car → 10.69 SOP).
  With these rules NormSoftmax gives 4.12 G and CGD 10.64 / 10.84 G (R50 / X50, car) — see tests.

Measured at 224×224, batch 1 (torch | thop; G = 1e9):
  NormSoftmax R50 (D 2048)          4.091 | 4.118
  CGD R50  SG, D 1536, 98 classes  10.603 | 10.644
  CGD X50  SG, D 1536, 98 classes  10.788 | 10.840
  ViT-S/16 trunk (DINO; 21.67 M parameters, timm's count)        4.598 | 8.416
  ViT-S/14 trunk (DINOv2; 16×16 patches, 21.63 M parameters)     6.124 | 10.961
The ViT counts include the attention products QKᵀ and AV (0.36 G of ViT-S/16's 4.60 G), counted
alike on the CPU and on CUDA (:func:`_sdpa_cpu_mapping`); the thop rules miss them and count each
Linear twice.
The proxy logits e·P̂ᵀ (C × D MACs per image; 0.2 M for CARS, 23 M for SOP at D 2048) are not
part of the network; :func:`complexity_report` adds them when given the proxies (``proxy_macs``).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_parameters", "count_macs", "complexity_report", "thop_macs"]


def _iter_tensors(obj) -> Iterable[torch.Tensor]:
    if isinstance(obj, nn.Module):
        yield from obj.parameters()
    elif isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, Iterable) and not isinstance(obj, (str, bytes)):
        for o in obj:
            yield from _iter_tensors(o)
    else:
        raise TypeError(f"count_parameters takes modules, tensors or iterables of them, got {type(obj)}")


def count_parameters(*modules_or_params, trainable_only: bool = False) -> int:
    """Number of scalar parameters in the given modules / tensors (each tensor counted once).

    Buffers are not parameters (the AsymptoticProxy proxies are a buffer: pass them explicitly if
    they should count, as the authors' tables do for NormSoftmax's proxies).
    """
    seen: set[int] = set()
    total = 0
    for t in _iter_tensors(modules_or_params):
        if id(t) in seen or (trainable_only and not t.requires_grad):
            continue
        seen.add(id(t))
        total += t.numel()
    return total


def _device_of(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@contextmanager
def _run(model: nn.Module, input_size, forward: str | None):
    """Run ``model.<forward>`` on a random input in eval mode and no_grad; restore the mode."""
    fn = getattr(model, forward or "forward")
    was_training = model.training
    model.eval()
    try:
        x = torch.randn(*input_size, device=_device_of(model))
        with torch.no_grad():
            yield fn, x
    finally:
        model.train(was_training)


def _sdpa_cpu_mapping() -> dict:
    """FlopCounterMode counts the CUDA kernels of ``scaled_dot_product_attention`` (flash,
    efficient, cuDNN) but not the CPU one, which timm's ViT attention dispatches to on a CPU: it
    gets the same formula (QKᵀ and AV, 2·B·heads·N²·d MACs), so the count does not depend on the
    device."""
    from torch.utils.flop_counter import sdpa_flop_count

    def cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {op: cpu_sdpa} if op is not None else {}


_SDPA_CPU = _sdpa_cpu_mapping()


def thop_macs(model: nn.Module, input_size=(1, 3, 224, 224), forward: str | None = None) -> int:
    """MACs as the authors' thop counted them (rules in the module docstring)."""
    total = [0]

    def conv(m: nn.Conv2d, inp, out):
        k = m.weight.shape[2:].numel()
        total[0] += out.numel() * (m.in_channels // m.groups * k + (m.bias is not None))

    def linear(m: nn.Linear, inp, out):
        total[0] += out.numel() * (2 * m.in_features - 1)

    def bn(m, inp, out):
        total[0] += 2 * inp[0].numel()

    def avgpool(m, inp, out):
        if isinstance(m, nn.AdaptiveAvgPool2d):
            area = (inp[0].shape[-2] // out.shape[-2]) * (inp[0].shape[-1] // out.shape[-1])
        else:
            ks = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * 2
            area = ks[0] * ks[1]
        total[0] += out.numel() * (area + 1)

    rules = [(nn.Conv2d, conv), (nn.Linear, linear), ((nn.BatchNorm1d, nn.BatchNorm2d), bn),
             ((nn.AvgPool2d, nn.AdaptiveAvgPool2d), avgpool)]
    handles = []
    for m in model.modules():
        if next(m.children(), None) is not None:
            continue  # thop hooks leaf modules only
        for kinds, hook in rules:
            if isinstance(m, kinds):
                handles.append(m.register_forward_hook(hook))
                break
    try:
        with _run(model, input_size, forward) as (fn, x):
            fn(x)
    finally:
        for h in handles:
            h.remove()
    return int(total[0])


def count_macs(model: nn.Module, input_size=(1, 3, 224, 224), *, convention: str = "torch",
               forward: str | None = None) -> int:
    """Multiply-accumulates of one ``model.<forward>`` call on a random ``input_size`` input.

    convention "torch": FlopCounterMode's FLOPs / 2 (conv + matmul only); "thop": the original code's
    rules (:func:`thop_macs`). Runs in eval mode under no_grad on the model's device (a model built
    on the meta device is counted without any arithmetic). forward: method name, e.g.
    ``"forward_with_aux"`` for CGD's full training forward.
    """
    if convention == "thop":
        return thop_macs(model, input_size, forward)
    if convention != "torch":
        raise ValueError(f"unknown convention {convention!r}; expected 'torch' or 'thop'")
    with _run(model, input_size, forward) as (fn, x), \
            FlopCounterMode(display=False, custom_mapping=_SDPA_CPU) as counter:
        fn(x)
    return int(counter.get_total_flops()) // 2


def complexity_report(model: nn.Module, *extra_params, input_size=(1, 3, 224, 224),
                      forward: str | None = None, proxies: torch.Tensor | None = None) -> dict:
    """Parameters and MACs of ``model`` (+ ``extra_params``, e.g. the loss's proxies) as a JSON dict.

    forward None: ``forward_with_aux`` when the model has it (the original repositories profiled CGD's full
    forward, aux classifier included), else ``forward``. proxies: a (C, D) tensor whose logit matmul
    (C·D MACs per image, missed by the authors' thop) is reported as ``proxy_macs``.

    Keys: params, params_model, params_extra, macs, flops (= 2·macs), macs_thop, proxy_macs,
    macs_with_proxies, input_size. Counts are ints; divide by 1e6 / 1e9 for M / G.
    """
    if forward is None:
        forward = "forward_with_aux" if hasattr(model, "forward_with_aux") else "forward"
    p_model = count_parameters(model)
    p_extra = count_parameters(*extra_params)
    macs = count_macs(model, input_size, forward=forward)
    proxy_macs = 0
    if proxies is not None:
        proxy_macs = int(input_size[0]) * proxies.shape[0] * proxies.shape[1]
    return {
        "params": p_model + p_extra,
        "params_model": p_model,
        "params_extra": p_extra,
        "macs": macs,
        "flops": 2 * macs,
        "macs_thop": count_macs(model, input_size, convention="thop", forward=forward),
        "proxy_macs": proxy_macs,
        "macs_with_proxies": macs + proxy_macs,
        "input_size": list(input_size),
    }
