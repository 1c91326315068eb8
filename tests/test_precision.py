"""Separation precision: the ``auto`` rule, exact tiling in every precision, bf16/fp16 quality,
and the (frames, channels) guard of the array API."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_model

from waveunet import precision as precision_module
from waveunet.errors import ConfigError, DataError
from waveunet.precision import PRECISIONS, cpu_has_native_bf16, resolve_precision
from waveunet.separation.inference import Separator

# A flags line of /proc/cpuinfo on the 2-core AMD EPYC (Zen 4) development machine: AVX512-BF16.
EPYC_ZEN4 = (
    "flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush "
    "mmx fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl "
    "xtopology nonstop_tsc cpuid extd_apicid tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid "
    "sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor "
    "lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw topoext cpuid_fault "
    "vmmcall fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid avx512f avx512dq rdseed adx smap "
    "avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves "
    "avx512_bf16 clzero xsaveerptr arat avx512vbmi umip avx512_vbmi2 gfni vaes vpclmulqdq "
    "avx512_vnni avx512_bitalg avx512_vpopcntdq rdpid fsrm"
)
# The same machine's line as an AVX-512 CPU without BF16 reports it (Zen 3 has no avx512 at
# all; Skylake-SP/Cascade Lake have avx512 without bf16): avx512_bf16 absent.
NO_BF16 = EPYC_ZEN4.replace(" avx512_bf16", "")
# Sapphire Rapids reports AMX (amx_bf16, amx_tile, amx_int8) besides avx512_bf16.
AMX_ONLY = NO_BF16 + " amx_bf16 amx_tile amx_int8"


def cpuinfo(flags: str) -> str:
    return f"processor\t: 0\nvendor_id\t: AuthenticAMD\n{flags}\nbogomips\t: 4792.80\n\n"


def test_auto_is_bf16_on_cuda_and_on_cpus_with_native_bf16():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert cpu_has_native_bf16(cpuinfo(EPYC_ZEN4))
    assert cpu_has_native_bf16(cpuinfo(AMX_ONLY))
    assert not cpu_has_native_bf16(cpuinfo(NO_BF16))
    assert not cpu_has_native_bf16("")  # no flags at all (another OS): fp32
    assert resolve_precision("auto", cpu, cpuinfo=cpuinfo(EPYC_ZEN4)) == "bf16"
    assert resolve_precision("auto", cpu, cpuinfo=cpuinfo(NO_BF16)) == "fp32"
    assert resolve_precision("auto", cuda, cpuinfo=cpuinfo(NO_BF16)) == "bf16"
    for explicit in ("fp32", "bf16", "fp16"):
        assert resolve_precision(explicit, cpu, cpuinfo=cpuinfo(NO_BF16)) == explicit
    with pytest.raises(ConfigError, match="precision: unknown 'half'"):
        resolve_precision("half", cpu)
    assert PRECISIONS == ("auto", "fp32", "bf16", "fp16")


@pytest.mark.parametrize("flags,expected", [(EPYC_ZEN4, "bf16"), (AMX_ONLY, "bf16"),
                                            (NO_BF16, "fp32"), (None, "fp32")])
def test_the_separator_follows_what_proc_cpuinfo_says(monkeypatch, flags, expected):
    """A CPU Separator's ``auto`` is read from /proc/cpuinfo (None: there is none, another OS)."""
    read = []

    def fake_open(path, *args, **kwargs):
        read.append(path)
        if flags is None:
            raise FileNotFoundError(2, "No such file or directory", path)
        return io.StringIO(cpuinfo(flags))

    monkeypatch.setattr(precision_module, "open", fake_open, raising=False)
    model = tiny_model(levels=4, filters=6)
    assert Separator(model, device="cpu").precision == expected
    assert read == ["/proc/cpuinfo"]
    assert Separator(model, device="cpu", precision="fp16").precision == "fp16"
    assert read == ["/proc/cpuinfo"]  # an explicit precision reads nothing


def noise(samples, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(2, samples, generator=g) * 2 - 1) * 0.5


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("upsampling", ["linear", "learned"])
def test_tiling_is_exact_in_reduced_precision(precision, upsampling):
    model = tiny_model(upsampling=upsampling, levels=4, filters=6)
    song = noise(30_000)
    results = [Separator(model, device="cpu", precision=precision, chunk_output_samples=chunk,
                         batch_size=batch).separate_tensor(song)
               for chunk, batch in [(1000, 3), (7000, 1), (40_000, 1)]]
    steps = {Separator(model, device="cpu", chunk_output_samples=c).step_samples
             for c in (1000, 7000, 40_000)}
    assert len(steps) == 3
    for other in results[1:]:
        torch.testing.assert_close(other.stems, results[0].stems, atol=0, rtol=0)
        torch.testing.assert_close(other.unclipped, results[0].unclipped, atol=0, rtol=0)
    assert results[0].stems.dtype == torch.float32


def trained_tiny_model() -> torch.nn.Module:
    """A tiny model trained for 80 Adam steps to pull a 440 Hz tone out of noise: weights that
    moved away from their initialisation, in a few seconds."""
    model = tiny_model(levels=3, filters=6)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    n_out = model.output_samples
    n_in = model.input_samples_for(n_out)
    g = torch.Generator().manual_seed(0)
    t = torch.arange(n_in) / 22050
    model.train()
    for _ in range(80):
        phase = torch.rand(4, 1, 1, generator=g) * 6.28
        accompaniment = 0.4 * torch.sin(2 * torch.pi * 440 * t + phase).expand(4, 2, n_in)
        vocals = 0.2 * (torch.rand(4, 2, n_in, generator=g) * 2 - 1)
        out = model(accompaniment + vocals)
        ctx = (n_in - out.estimates.shape[-1]) // 2
        target = torch.stack([accompaniment, vocals], 1)[..., ctx:ctx + out.estimates.shape[-1]]
        loss = torch.nn.functional.mse_loss(out.estimates, target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.01  # it learned something
    return model.eval()


def snr_db(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    noise_power = (reference - estimate).double().square().sum()
    return float(10 * torch.log10(reference.double().square().sum() / noise_power))


def test_reduced_precision_stems_are_within_45_db_of_fp32():
    model = trained_tiny_model()
    rate = 22050
    t = np.arange(3 * rate) / rate
    song = np.stack([0.4 * np.sin(2 * np.pi * 440 * t), 0.4 * np.sin(2 * np.pi * 440 * t + 1)])
    song = (song + 0.2 * np.random.default_rng(0).uniform(-1, 1, song.shape)).astype(np.float32)
    reference = Separator(model, device="cpu", precision="fp32").separate(song, rate)
    for precision in ("bf16", "fp16"):
        result = Separator(model, device="cpu", precision=precision).separate(
            song, rate, bound_statistics=True)
        assert result.stems.dtype == torch.float32
        for i in range(2):
            snr = snr_db(reference.stems[i], result.stems[i])
            assert 45 <= snr < 200, (precision, i, snr)  # close, and really reduced precision
        stats = result.bound_statistics
        assert stats is not None and all(isinstance(s["fraction_clipped"], float) for s in stats)


def test_a_soundfile_layout_array_is_refused_with_the_fix():
    sep = Separator(tiny_model(levels=4, filters=6), device="cpu")
    song = noise(4000).numpy()
    with pytest.raises(DataError, match=r"\(frames, channels\) layout; pass audio\.T"):
        sep.separate(song.T, 22050)  # what soundfile.read returns
    with pytest.raises(DataError, match="(frames, channels)"):
        sep.separate(torch.from_numpy(song.T.copy()), 22050)
    assert sep.separate(song, 22050).stems.shape == (2, 2, 4000)
    assert sep.separate(song[:, :1], 22050).stems.shape == (2, 2, 1)  # 2 channels, 1 sample
    assert sep.separate(np.zeros((6, 3), np.float32), 22050).stems.shape == (2, 6, 3)


def test_separate_and_settings_start_without_torch_or_omegaconf():
    """``waveunet separate``'s module (its argument parsing) imports neither: the precision
    names live in waveunet.precision, which imports torch only where it is used."""
    code = ("import sys, waveunet.separation.separate; "
            "assert 'torch' not in sys.modules and 'omegaconf' not in sys.modules, "
            "[m for m in ('torch', 'omegaconf') if m in sys.modules]; "
            "import waveunet.settings.schema; assert 'torch' not in sys.modules")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, timeout=60)
    assert done.returncode == 0, done.stderr
