"""The benchmark report and chart (benchmarks/) on a small saved pytest-benchmark JSON."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks import chart, report, run

SMALL = Path(__file__).parent / "data" / "bench_small.json"


@pytest.fixture(scope="module")
def data() -> dict:
    return report.load(SMALL)


def raw(data: dict, group: str, name: str) -> dict:
    (bench,) = [b for b in data["benchmarks"] if b["group"] == group and b["name"] == name]
    return bench


def test_cases_scale_the_subset_of_the_book_loop(data):
    rows = {(r.group, r.name): r for r in report.cases(data)}
    bench = raw(data, "numgrad-784-50-10-B100", "numpy-numerical")
    scale = bench["extra_info"]["scale"]
    assert scale > 1  # timed on a subset
    row = rows["numgrad-784-50-10-B100", "numpy-numerical"]
    assert row.seconds == pytest.approx(bench["stats"]["median"] * scale)
    assert row.kind == "numerical" and row.impl == "numpy" and row.suite == "numgrad"
    backprop = rows["numgrad-784-50-10-B100", "numpy-backprop"]
    assert backprop.scale == 1.0
    assert backprop.seconds == raw(data, "numgrad-784-50-10-B100", "numpy-backprop")["stats"]["median"]


def test_other_statistics(data):
    rows = {(r.group, r.name): r for r in report.cases(data, "min")}
    assert rows["step-B100-float64", "book"].seconds == raw(data, "step-B100-float64", "book")["stats"]["min"]


def test_report_has_every_section(data):
    text = report.report(data)
    for heading in ("# fastnet benchmarks", "## Summary (median)", "## Median time of every case", "## Numerical gradient vs backprop",
                    "## Speed-up over the numpy backend", "## Ratios with targets"):
        assert heading in text
    assert "AMD EPYC" in text and "2 cores" in text
    assert "scaled to the whole net" in text  # the footnote for the subset cases
    assert "Backend cupy skipped" in text


def test_numerical_over_backprop_ratio(data):
    rows = {(r.group, r.name): r for r in report.cases(data)}
    ratio = rows["numgrad-784-50-10-B100", "numba-numerical"].seconds / rows["numgrad-784-50-10-B100", "numba-backprop"].seconds
    line = next(x for x in report.numgrad_section(report.cases(data)) if x.startswith("| 784-50-10-B100 ")
                and "| numba " in x)
    assert report.fmt_ratio(ratio) in line


def test_speedup_over_numpy_and_targets(data):
    rows = {(r.group, r.name): r for r in report.cases(data)}
    g = "step-B100-float64"
    speed = rows[g, "numpy"].seconds / rows[g, "numba"].seconds
    section = report.speedup_section(report.cases(data))
    assert any(line.startswith(f"| {g} ") and "public API" in line and report.fmt_ratio(speed) in line
               for line in section)
    floor = rows[g, "numba"].seconds / rows[g, "matmul-floor"].seconds
    targets = report.targets_section(report.cases(data))
    line = next(x for x in targets if "numba step / matmul floor" in x)
    assert f"{floor:,.3g}" in line and "<= 1.35" in line
    assert ("| yes |" in line) == (floor <= 1.35)


def test_summary_puts_the_prediction_floor_in_the_floor_column(data):
    rows = report.cases(data)
    section = report.summary_section(rows, "median")
    header = [c.strip() for c in section[2].strip("|").split("|")]
    line = next(x for x in section if x.startswith("| predict-10k-float64 "))
    cells = [c.strip() for c in line.strip("|").split("|")]
    matmul = {(r.group, r.name): r for r in rows}["predict-10k-float64", "matmul"]
    assert cells[header.index("matmul-floor")] == report.fmt_time(matmul.seconds)


def test_missing_cases_are_left_out():
    data = {"benchmarks": [{"group": "step-B100-float64", "name": "numpy", "stats": {"median": 1e-3, "rounds": 5}}]}
    text = report.report(data)
    assert "| step-B100-float64 | numpy" in text
    assert "Ratios with targets" not in text and "Numerical gradient" not in text


@pytest.mark.parametrize("seconds, shown", [(2.5, "2.5 s"), (0.0123, "12.3 ms"), (4.56e-5, "45.6 µs"), (3e-9, "3 ns")])
def test_fmt_time(seconds, shown):
    assert report.fmt_time(seconds) == shown


def test_main_reads_json_and_writes_chart(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png, md = tmp_path / "chart.png", tmp_path / "report.md"
    assert run.main(["--json", str(SMALL), "--chart", str(png), "--report", str(md)]) == 0
    out = capsys.readouterr().out
    assert "## Median time of every case" in out and f"chart written to {png}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert md.read_text(encoding="utf-8").startswith("# fastnet benchmarks")


def test_main_without_matplotlib(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    assert run.main(["--json", str(SMALL), "--chart", str(tmp_path / "c.png")]) == 0
    assert "matplotlib is not installed" in capsys.readouterr().out
    assert not (tmp_path / "c.png").exists()


def test_main_bad_inputs(tmp_path, capsys):
    assert run.main(["--json", str(tmp_path / "missing.json")]) == 2
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    assert run.main(["--json", str(other), "--no-chart"]) == 2
    assert "not a pytest-benchmark JSON" in capsys.readouterr().err
    assert run.main(["--suites", str(tmp_path / "nowhere")]) == 2


def test_find_suites_in_the_checkout():
    folder = run.find_suites()
    assert folder is not None and (folder / "bench_numgrad.py").is_file()


def test_main_runs_suites(tmp_path, capsys):
    """The running path, on a one-case suite folder (a subprocess pytest run)."""
    suites = tmp_path / "benchmarks"
    suites.mkdir()
    (suites / "bench_step.py").write_text(textwrap.dedent("""
        def test_tiny(benchmark):
            benchmark.group = "step-B100-float64"
            benchmark.name = "numpy"
            benchmark(sum, range(10))
    """))
    out = tmp_path / "run.json"
    code = run.main(["--suites", str(suites), "--save", str(out), "--quick", "--no-chart"])
    assert code == 0, capsys.readouterr()
    saved = report.load(out)
    assert [b["name"] for b in saved["benchmarks"]] == ["numpy"]
    assert "| step-B100-float64 | numpy" in capsys.readouterr().out


def test_module_entry_point():
    done = subprocess.run([sys.executable, "-m", "benchmarks.run", "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "--json" in done.stdout


def test_other_work_is_reported_and_merged():
    def one_run(cores: float, seconds: float) -> dict:
        info = {"fastnet": {"other_load": {"other_cores": cores, "seconds": seconds}}}
        return {"machine_info": info, "benchmarks": []}

    quiet, busy = one_run(0.05, 100.0), one_run(1.5, 50.0)
    busy["machine_info"]["fastnet"]["env"] = {"OMP_NUM_THREADS": "1"}
    assert "Environment: OMP_NUM_THREADS=1" in report.machine_lines(busy)
    assert not any("unreliable" in line for line in report.machine_lines(quiet))
    assert any("1.50 cores" in line and "unreliable" in line for line in report.machine_lines(busy))
    run.merge_load(quiet, busy)
    merged = quiet["machine_info"]["fastnet"]["other_load"]
    assert merged["seconds"] == 150.0
    assert merged["other_cores"] == pytest.approx((0.05 * 100 + 1.5 * 50) / 150, abs=0.01)


def test_best_of_keeps_each_cases_least_disturbed_run(data):
    import copy

    before = copy.deepcopy(data)
    slow = copy.deepcopy(data)
    for bench in slow["benchmarks"]:
        bench["stats"] = {k: v * 3 if isinstance(v, float) else v for k, v in bench["stats"].items()}
    slow["benchmarks"][0]["stats"]["median"] = data["benchmarks"][0]["stats"]["median"] / 2
    best = run.best_of([data, slow])
    assert len(best["benchmarks"]) == len(data["benchmarks"])
    assert best["benchmarks"][0]["stats"] == slow["benchmarks"][0]["stats"]
    assert best["benchmarks"][0]["extra_info"]["repeats"]["chosen_run"] == 1
    assert all(b["extra_info"]["repeats"]["chosen_run"] == 0 for b in best["benchmarks"][1:])
    assert data == before  # inputs left alone
    assert any("Best of 2 runs" in line for line in report.machine_lines(best))


def _gpu_case(group, name, seconds, **info):
    return {"group": group, "name": name, "stats": {"median": seconds, "min": seconds, "rounds": 5},
            "extra_info": info}


def test_gpu_targets_section_scales_chunks_and_judges_each_target():
    per_call = 50  # steps per timed call: the report shows one step
    data = {"benchmarks": [
        _gpu_case("gpu-step-B100-float32", "cupy", 20e-6 * per_call, steps_per_call=per_call, scale=1 / per_call),
        _gpu_case("gpu-step-B100-float32", "torch-cuda-graph", 60e-6 * per_call, steps_per_call=per_call,
                  scale=1 / per_call),
        _gpu_case("gpu-step-B100-float32", "cupy-book", 1e-3 * per_call, steps_per_call=per_call, scale=1 / per_call),
        _gpu_case("gpu-step-B100-float32", "cupy-bookstyle", 250e-6 * per_call, steps_per_call=per_call,
                  scale=1 / per_call),
        _gpu_case("gpu-epoch-600x100-float32", "cupy", 12e-3),
    ]}
    lines = report.gpu_section(report.cases(data))
    text = "\n".join(lines)
    step = next(line for line in lines if "gpu-step-B100-float32 · cupy" in line)
    assert "20 µs" in step and "3×" in step and step.rstrip("| ").endswith("yes")
    epoch = next(line for line in lines if "gpu-epoch" in line)
    assert epoch.rstrip("| ").endswith("no")  # 12 ms against 10 ms
    assert "4x" in text  # the book's algorithm over the book-style loop: 1 ms / 250 µs
    assert "per step" in report.report(data)


def test_round_by_round_ratios_are_judged_from_extra_info():
    rounds = _gpu_case("step-B100-float64-rounds", "rounds", 20e-3,
                       ratios={"numba/matmul-floor": 1.41, "book/numba": 1.32})
    layers = _gpu_case("step-B100-float64-layers-rounds", "layers-rounds", 20e-3,
                       ratios={"numpy-layers/numba-layers": 1.31})
    lines = report.targets_section(report.cases({"benchmarks": [rounds, layers]}))
    floor = next(line for line in lines if "matmul floor" in line and "per round" in line)
    layered = next(line for line in lines if "layer net" in line and "per round" in line)
    assert "1.41" in floor and floor.rstrip("| ").endswith("no")  # 1.41 against <= 1.35
    assert "1.31" in layered and layered.rstrip("| ").endswith("yes")
    assert report.targets_section(report.cases({"benchmarks": [_gpu_case(
        "step-B100-float64-rounds", "rounds", 20e-3)]})) == []  # no ratios recorded: no rows


def test_round_groups_stay_out_of_the_summary():
    data = {"benchmarks": [
        _gpu_case("step-B100-float64", "numba", 270e-6),
        _gpu_case("step-B100-float64-rounds", "rounds", 20e-3, ratios={"numba/matmul-floor": 1.2}),
    ]}
    summary = "\n".join(report.summary_section(report.cases(data), "median"))
    assert "step-B100-float64 " in summary and "rounds" not in summary


def test_bench_names_the_extra_before_running_anything(monkeypatch, capsys):
    import importlib.util

    from fastnet.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pytest_benchmark" else real(name, *a))
    ran = []
    monkeypatch.setattr(run, "run_suites", lambda *a, **k: ran.append(a))
    assert main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert ran == [] and len(err) == 1
    assert "needs pytest-benchmark" in err[0] and "pip install 'fastnet[bench]'" in err[0]


def test_report_speaks_to_users_only():
    import inspect

    for module in (report, chart, run):
        text = inspect.getsource(module).lower()
        assert "issue" not in text and "session" not in text, module.__name__


def test_chart_panels_from_the_small_run():
    rows = report.cases(report.load(SMALL))
    numgrad = dict(chart.numgrad_blocks(rows))
    bars = numgrad["784-50-10 B100"]
    assert [impl for impl, *_ in bars] == ["numpy", "numpy", "numba", "numba"]  # numerical, backprop per backend
    assert "backprop" in bars[2][2] and bars[3][3].get("hatch")
    floor = {label.split("\n")[0]: bars for label, bars in chart.floor_blocks(rows)}
    step = {impl: value for impl, value, *_ in floor["step B100 fp64"]}
    by = {(r.group, r.name): r.seconds for r in rows}
    assert step["numba"] == pytest.approx(by["step-B100-float64", "numba"] / by["step-B100-float64", "matmul-floor"])
    assert set(step) == {"book", "numpy", "numba"}
    assert "predict-10k fp64" in floor  # a prediction's floor is the case named "matmul"
    peers = {label.split("\n")[0]: bars for label, bars in chart.peer_blocks(rows)}
    speed = {impl: value for impl, value, *_ in peers["step B100 fp64"]}
    assert {"torch-manual", "torch-autograd", "jax-jit"} <= set(speed)
    assert speed["jax-jit"] == pytest.approx(by["step-B100-float64", "book"] / by["step-B100-float64", "jax-jit"])
    used = {impl for blocks in (numgrad.values(), (b for _, b in chart.floor_blocks(rows))) for bars in blocks
            for impl, *_ in bars}
    colours = [chart.COLOURS[impl] for impl in used | set(speed)]
    assert len(colours) == len(set(colours))  # no two implementations share a colour


def test_chart_with_no_charted_cases(tmp_path):
    pytest.importorskip("matplotlib")
    data = {"benchmarks": [_gpu_case("gpu-epoch-600x100-float32", "cupy", 12e-3)]}
    assert chart.write_chart(data, tmp_path / "c.png").startswith("no chart")
    assert not (tmp_path / "c.png").exists()


def test_conv_targets_are_judged_from_their_cases():
    def case(group, name, seconds):
        return {"group": group, "name": name, "stats": {"median": seconds, "min": seconds, "rounds": 3},
                "extra_info": {}}

    g = "conv-simple-B100-float64"
    lines = report.targets_section(report.cases({"benchmarks": [
        case(g, "numpy", 0.072), case(g, "numba", 0.021), case(g, "torch", 0.0165)]}))
    numpy_line = next(x for x in lines if "numpy / numba, SimpleConvNet step (B100 fp64)" in x)
    assert "3.43" in numpy_line and ">= 2.5" in numpy_line and numpy_line.split("|")[-2].strip() == "yes"
    torch_line = next(x for x in lines if "torch / numba, SimpleConvNet step (B100 fp64)" in x)
    assert "0.786" in torch_line and torch_line.split("|")[-2].strip() == "no"
    assert not any("DeepConvNet" in x for x in lines)  # no cases, no line


def test_conv_round_targets_read_the_per_round_ratios():
    rounds = {"group": "conv-simple-B100-float32-rounds", "name": "rounds",
              "stats": {"median": 1.0, "min": 1.0, "rounds": 3},
              "extra_info": {"ratios": {"numpy/numba": 2.96, "torch/numba": 1.24}}}
    lines = report.targets_section(report.cases({"benchmarks": [rounds]}))
    line = next(x for x in lines if "torch / numba, SimpleConvNet step (B100 fp32), in turn per round" in x)
    assert "1.24" in line and line.split("|")[-2].strip() == "yes"


def test_a_target_judged_from_a_disturbed_median_is_unsure(data):
    rows = report.cases(data)
    floor = next(r for r in rows if r.group == "step-B100-float64" and r.name == "matmul-floor")
    disturbed = floor._replace(seconds=30 * floor.fastest)  # other work held the cores
    rows = [disturbed if r is floor else r for r in rows]
    line = next(x for x in report.targets_section(rows) if "numba step / matmul floor" in x)
    assert "unsure (a median 30x its fastest round)" in line and "| yes |" not in line
