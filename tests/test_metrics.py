"""MFU's denominator: the device's dense peak at the precision the run's matmuls use."""

import pytest
import torch

from pretrain.metrics import matmul_precision, peak_for, peak_tflops


@pytest.mark.parametrize("name, matmul, peak", [
    ("NVIDIA H200", "bf16", 989.0),
    ("NVIDIA H200", "fp16", 989.0),
    ("NVIDIA H100 80GB HBM3", "tf32", 494.5),
    ("NVIDIA H100 80GB HBM3", "fp32", 67.0),
    ("NVIDIA H100 PCIe", "bf16", 756.0),  # not the SXM part's figure
    ("NVIDIA A100-SXM4-80GB", "bf16", 312.0),
    ("NVIDIA A100-SXM4-80GB", "tf32", 156.0),
    ("NVIDIA A100-SXM4-80GB", "fp32", 19.5),
    ("NVIDIA L4", "bf16", 121.0),
    ("NVIDIA GeForce RTX 3090", "bf16", None),  # unknown: no MFU rather than a wrong one
])
def test_peak_by_device_name_and_matmul_precision(name, matmul, peak):
    assert peak_for(name, matmul) == peak


def test_fp32_runs_count_against_tf32_only_when_torch_uses_tf32():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision())
    try:
        assert matmul_precision("bf16") == "bf16" and matmul_precision("fp16") == "fp16"
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        assert matmul_precision("fp32") == "fp32"
        torch.set_float32_matmul_precision("high")
        assert matmul_precision("fp32") == "tf32"
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before[0]
        torch.set_float32_matmul_precision(before[1])


def test_a_configured_peak_wins_and_a_cpu_has_none():
    assert peak_tflops(123.0, "bf16") == 123.0
    if not torch.cuda.is_available():
        assert peak_tflops(None, "bf16") is None
