"""tools/gpu_check.sh and its summary, checked where no GPU is: the script
must stop with a clear reason and exit 3, and the summary must count CUDA
tests that did not run as a failure."""

import json
import os
import subprocess
import sys

import pytest

import fusednn as fd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import gpu_summary  # noqa: E402


def test_dry_run_without_gpu_says_so_and_exits_3(tmp_path):
    if fd.has_cuda():
        pytest.skip("a GPU is usable here: tools/gpu_check.sh would run for real")
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path), GPU_CHECK_SKIP_BUILD="1")
    r = subprocess.run(["bash", os.path.join(ROOT, "tools", "gpu_check.sh")], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "NO GPU: " + fd.cuda_status() in r.stdout
    assert "NO GPU" in (tmp_path / "check.log").read_text()


def _junit(path, cases):
    rows = []
    for name, outcome, message in cases:
        body = {"passed": "", "failed": '<failure message="boom"/>',
                "skipped": f'<skipped message="{message}"/>'}[outcome]
        rows.append(f'<testcase classname="tests.test_x" name="{name}">{body}</testcase>')
    path.write_text("<testsuites><testsuite>" + "".join(rows) + "</testsuite></testsuites>")


@pytest.mark.parametrize("cuda_skip,expect", [(False, 0), (True, 1)])
def test_summary_fails_when_cuda_tests_were_skipped(tmp_path, cuda_skip, expect, capsys):
    out, benches = tmp_path / "out", tmp_path / "bench"
    out.mkdir()
    benches.mkdir()
    cases = [("test_a[cpu]", "passed", ""), ("test_a[cuda]", "passed", ""),
             ("test_cpu_cuda_bit_identical", "passed", "")]
    if cuda_skip:
        cases.append(("test_b[cuda]", "skipped", "CUDA backend unavailable: no GPU"))
    _junit(out / "junit.xml", cases)
    (out / "sanitizer.log").write_text("========= ERROR SUMMARY: 0 errors\n")
    (benches / "status.txt").write_text(
        "\n".join(f"{k}=0" for k in ("tests", "sanitizer", "dense_relu", "dense_elu",
                                      "optimizers", "bn_dropout", "train")))
    (benches / "optimizers-cuda.json").write_text(json.dumps(
        {"rows": [{"optimizer": "adam", "of_copy": 0.93, "vs_fused": 1.2}]}))
    assert gpu_summary.main(str(out), str(benches)) == expect
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tests"]["cuda_passed"] == 2  # test_a[cuda] and the mask test
    assert summary["tests"]["cuda_skipped_no_gpu"] == int(cuda_skip)
    assert summary["tests"]["masks_identical"] is True
    assert summary["sanitizer_errors"] == 0
    adam = [g for g in summary["targets"] if g["what"].startswith("Adam 100M params, fraction")]
    assert adam[0]["value"] == 0.93 and adam[0]["met"] is True
    assert "GPU check: " + ("PASSED" if expect == 0 else "FAILED") in capsys.readouterr().out
