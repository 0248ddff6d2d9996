"""Runtime CPU dispatch: the CPU kernels are built for several instruction-set
levels and the best one this CPU runs is loaded at import
(csrc/cpu/dispatch.h). Every level gives the same results; an unknown or
unsupported FUSEDNN_CPU_DISPATCH is refused at import; the default build runs
on older x86-64 CPUs, emulated with qemu-user where it is installed."""

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fusednn as fd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INFO = fd.build_info()["cpu_dispatch"]
PKG = os.path.dirname(fd.__file__)

# Computed in a fresh process at each level: a dense layer forward and
# backward, batch norm with ELU and dropout, softmax cross-entropy and two
# Nadam steps, in float32.
_PROGRAM = r"""
import sys, numpy as np, fusednn as fd
rng = np.random.default_rng(0)
x = rng.standard_normal((67, 45)).astype(np.float32)
w = (rng.standard_normal((45, 33)) / 7).astype(np.float32)
b = rng.standard_normal(33).astype(np.float32)
dy = rng.standard_normal((67, 33)).astype(np.float32)
y, ctx = fd.ops.dense_forward(x, w, b, "gelu")
dx, dw, db = fd.ops.dense_backward(dy, ctx)
g, bt = np.ones(33, np.float32), np.zeros(33, np.float32)
z, bctx = fd.ops.batchnorm_forward(y, g, bt, np.zeros(33, np.float32), np.ones(33, np.float32),
                                   training=True, activation="elu", dropout=0.3, seed=1, step=2)
dz, dg, dbt = fd.ops.batchnorm_backward(dy, bctx)
loss, dl = fd.ops.softmax_cross_entropy(z, np.arange(67) % 33)
p = [w.copy(), b.copy()]
opt = fd.optimizers.Nadam(learning_rate=0.01, global_clipnorm=1.0)
for _ in range(2):
    opt.apply([dw, db], p)
np.savez(sys.argv[1], y=y, dx=dx, dw=dw, db=db, z=z, dz=dz, dg=dg, dbt=dbt, loss=loss, dl=dl,
         p0=p[0], p1=p[1], level=fd.build_info()["cpu_dispatch"]["level"])
"""


def _run(env_extra, *args, prefix=(), timeout=120):
    # A child picks its level itself unless a test names one: the suite may
    # run under FUSEDNN_CPU_DISPATCH=baseline (.ci/run does), which must not
    # leak into a test of the automatic choice.
    env = {k: v for k, v in os.environ.items() if k != "FUSEDNN_CPU_DISPATCH"}
    env.update(env_extra)
    return subprocess.run([*prefix, sys.executable, *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_build_info_names_the_level():
    assert INFO["level"] in INFO["compiled"]
    assert set(INFO["supported"]) <= set(INFO["compiled"])
    assert INFO["level"] in INFO["supported"]
    if os.environ.get("FUSEDNN_CPU_DISPATCH"):
        assert INFO["chosen_by"] == "FUSEDNN_CPU_DISPATCH"
        assert INFO["level"] == os.environ["FUSEDNN_CPU_DISPATCH"]
    else:
        assert INFO["chosen_by"] == "cpuid"
        assert INFO["level"] == INFO["supported"][-1]  # the best one
    for level in INFO["compiled"]:
        assert os.path.exists(os.path.join(PKG, f"_cpu_{level}.so")), level


def test_every_level_gives_the_same_results(tmp_path):
    """Same results at every level this CPU runs, within float32 rounding
    (vector widths change the order of sums); dropout masks exactly."""
    results = {}
    for level in INFO["supported"]:
        out = tmp_path / f"{level}.npz"
        r = _run({"FUSEDNN_CPU_DISPATCH": level}, "-c", _PROGRAM, str(out))
        assert r.returncode == 0, r.stderr
        results[level] = dict(np.load(out))
        assert str(results[level]["level"]) == level
    first = INFO["supported"][0]
    for level, got in results.items():
        for key, ref in results[first].items():
            if key == "level":
                continue
            scale = max(float(np.abs(ref).max()), 1e-30)
            err = float(np.abs(got[key].astype(np.float64) - ref).max()) / scale
            assert err <= 1e-5, f"{key} at {level} vs {first}: scaled error {err:.2e}"
        # the same elements dropped: dropped outputs of alpha=False dropout are 0
        np.testing.assert_array_equal(got["z"] == 0, results[first]["z"] == 0)


@pytest.mark.parametrize("value", ["sse9", "AVX2", "native-ish"])
def test_unknown_level_is_refused_at_import(value):
    r = _run({"FUSEDNN_CPU_DISPATCH": value}, "-c", "import fusednn")
    assert r.returncode != 0
    assert "ImportError" in r.stderr
    msg = r.stderr.strip().splitlines()[-1]
    assert f"FUSEDNN_CPU_DISPATCH={value}" in msg, msg
    for level in INFO["compiled"]:
        assert level in msg, msg


def test_baseline_library_has_no_avx():
    """The baseline level runs on an x86-64-v2 CPU (Nehalem): no VEX- or
    EVEX-encoded instruction (AVX and later) anywhere in its library."""
    if "baseline" not in INFO["compiled"]:
        pytest.skip("no baseline level in this build")
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump is not installed")
    text = subprocess.run([objdump, "-d", "--no-show-raw-insn",
                           os.path.join(PKG, "_cpu_baseline.so")],
                          capture_output=True, text=True, check=True).stdout
    vex = [line for line in text.splitlines()
           if re.match(r"\s+[0-9a-f]+:\s+v[a-z0-9]+\s", line) or "%ymm" in line or "%zmm" in line]
    assert not vex, "AVX instructions in the baseline library:\n" + "\n".join(vex[:10])


# (qemu CPU model, OpenBLAS core type, the level expected). OpenBLAS's own
# detection misreads qemu's older models and picks Haswell kernels (an
# illegal instruction there, in NumPy's OpenBLAS as in fusednn's), so the
# core type is named, as on the real CPUs it would be detected.
OLD_CPUS = [("Nehalem", "Nehalem", "baseline"), ("SandyBridge", "Sandybridge", "baseline"),
            ("Haswell", "Haswell", "avx2")]


def _qemu():
    q = shutil.which("qemu-x86_64")
    if q is None or not sys.platform.startswith("linux") or os.uname().machine != "x86_64":
        pytest.skip("qemu-x86_64 (Debian's qemu-user) is not installed, or not an x86-64 Linux")
    if INFO["compiled"] == [INFO["level"]] and INFO["level"] not in ("baseline", "avx2",
                                                                      "avx512"):
        pytest.skip(f"a single-level build ({INFO['level']}): not for older CPUs")
    return q


@pytest.mark.parametrize("cpu,coretype,level", OLD_CPUS, ids=[c[0] for c in OLD_CPUS])
def test_default_build_runs_on_older_cpus(cpu, coretype, level):
    qemu = _qemu()
    env = {"OPENBLAS_CORETYPE": coretype}
    probe = _run(env, "-c", "import numpy", prefix=(qemu, "-cpu", cpu))
    if probe.returncode != 0:
        pytest.skip(f"NumPy {np.__version__} itself does not run on {cpu}")
    r = _run(env, os.path.join(ROOT, "tools", "cpu_smoke.py"), prefix=(qemu, "-cpu", cpu),
             timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"level {level}," in r.stdout and r.stdout.rstrip().endswith("ok"), r.stdout


def test_a_level_this_cpu_lacks_is_refused_at_import():
    qemu = _qemu()
    if "avx512" not in INFO["compiled"]:
        pytest.skip("no avx512 level in this build")
    r = _run({"FUSEDNN_CPU_DISPATCH": "avx512", "OPENBLAS_CORETYPE": "Haswell"}, "-c",
             "import fusednn", prefix=(qemu, "-cpu", "Haswell"))
    assert r.returncode != 0
    msg = r.stderr.strip().splitlines()[-1]
    assert "FUSEDNN_CPU_DISPATCH=avx512 is a level this CPU lacks" in msg, msg
    assert "baseline, avx2" in msg, msg
