"""dml_core.core.allocator: glibc's thresholds raised once, results unchanged."""
import subprocess
import sys

import pytest

from dml_core.core import allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_thresholds_are_set_once_and_training_arithmetic_is_unchanged():
    code = (
        "import torch, torchvision\n"
        "from dml_core.core.allocator import keep_freed_memory\n"
        "def grads(keep):\n"
        "    if keep: assert keep_freed_memory() and keep_freed_memory()\n"
        "    torch.manual_seed(0); torch.set_num_threads(1)\n"
        "    m = torchvision.models.resnet18(num_classes=8)\n"
        "    opt = torch.optim.Adam(m.parameters(), 1e-3)\n"
        "    for _ in range(2):\n"
        "        opt.zero_grad(); m(torch.randn(4, 3, 24, 24)).square().mean().backward(); opt.step()\n"
        "    return torch.cat([p.detach().flatten() for p in m.parameters()])\n"
        "a = grads(False); b = grads(True)\n"
        "print('EQUAL' if torch.equal(a, b) else 'DIFFERENT')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("EQUAL")


def test_another_platform_is_left_alone(monkeypatch):
    monkeypatch.setattr(allocator, "_done", None)
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *a: pytest.fail("libc was loaded"))
    assert allocator.keep_freed_memory() is False
