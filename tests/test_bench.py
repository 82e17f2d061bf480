"""The benchmark command (issue 11): one tiny CPU run's JSON contract, its REPORT.md section, the anchor-output
parser and the argument errors."""
import json
import math

import pytest

from benchmarks import bench
from benchmarks.perf_report import performance_section


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("bench")
    assert bench.main(["--size", "tiny", "--device", "cpu", "--out", str(out), "--data", data_root]) == 0
    with open(out / "cpu.json") as f:
        return out, json.load(f)


def test_json_contract(tiny):
    out, res = tiny
    for key in ("device", "device_class", "cpu", "cores", "threads", "torch", "date", "size", "rounds", "workloads",
                "overhead", "targets", "engine_options"):
        assert key in res, key
    assert res["device_class"] == "cpu" and res["size"] == "tiny" and res["device"]
    assert res["complete"] is True and not (out / "cpu.partial.json").exists()  # replaced by the finished bench
    assert res["cores"] >= 1 and res["threads"] >= 1 and res["date"].endswith("+00:00")
    assert set(res["workloads"]) == {"mnist-mlp", "cifar-resnet20"}
    mnist, cifar = res["workloads"]["mnist-mlp"], res["workloads"]["cifar-resnet20"]
    assert set(mnist["paths"]) == {"anchor", "engine", "packed-2", "jobs-2"} and res["jobs"] == ["2"]
    assert cifar["paths"]["anchor"]["status"] == "skipped" and "50,000" in cifar["paths"]["anchor"]["reason"]
    assert cifar["ratios"]["engine/anchor"] == "not measured"
    for w in (mnist, cifar):
        for name, p in w["paths"].items():
            if name == "anchor" and w is cifar:
                continue
            assert p["status"] == "ok", (name, p)
            assert len(p["rounds_s"]) == res["rounds"] and all(s > 0 for s in p["rounds_s"])
            assert p["epoch_s"] == min(p["rounds_s"]) or math.isclose(p["epoch_s"], min(p["rounds_s"]), rel_tol=1e-3, abs_tol=1e-4)
            assert math.isclose(p["images_per_s"], p["images"] / p["epoch_s"])
        assert w["paths"]["packed-2"]["images"] == 2 * w["paths"]["engine"]["images"]
        j = w["paths"]["jobs-2"]  # two processes side by side, one run each, as --jobs 2 trains
        assert j["images"] == 2 * w["paths"]["engine"]["images"] and j["processes"] == 2 and j["k"] == 1
        assert j["threads_each"] == max(1, res["usable_cores"] // 2)
        for key, r in w["ratios"].items():
            if r == "not measured":
                continue
            num, den = key.split("/")
            assert math.isclose(r["value"], w["paths"][num]["images_per_s"] / w["paths"][den]["images_per_s"])
            assert math.isclose(r["median"], w["paths"][num]["images_per_s_median"]
                                / w["paths"][den]["images_per_s_median"])
    assert isinstance(mnist["ratios"]["engine/anchor"], dict)
    b = mnist["bound"]  # the hand-written packing bound: K = 3 on the CPU, with its own per-step times
    assert b["status"] == "ok" and b["k"] == 3 and b["single_step_s"] > 0 and b["packed_step_s"] > 0
    assert math.isclose(b["ratio"], 3 * b["single_step_s"] / b["packed_step_s"])
    assert res["overhead"]["mlp500"]["status"] == "ok" and res["overhead"]["mlp500"]["x_erm"]["erm"] == 1.0
    ids = {t["id"]: t for t in res["targets"]}
    assert set(ids) == {"cpu-engine-vs-anchor", "cpu-packed-3"}
    for t in ids.values():  # tiny measures no target: each says so, with its threshold
        assert t["threshold"] == 2.0 and t["op"] == ">=" and t["measured"] == "not measured" and t["pass"] is None


def test_performance_section(tiny, tmp_path):
    out, res = tiny
    text = performance_section(str(out))
    assert "## Performance" in text and res["device"] in text and res["torch"] in text and res["date"] in text
    assert "| mnist-mlp | engine |" in text and "packed-2/engine" in text and "not measured" in text
    assert ">= 2" in text
    assert "No benchmark run yet" in performance_section(str(tmp_path))


def test_parse_anchor_output():
    text = ("some warning\nmnist-mlp device=cpu batch=20 workers=0 epoch_s=43.95 (epochs 1) test_acc=95.91\n")
    assert bench.parse_anchor_output(text) == 43.95
    assert bench.parse_anchor_output("epoch_s=1.00\nx epoch_s=2.5 y\n") == 2.5
    with pytest.raises(ValueError, match="epoch_s"):
        bench.parse_anchor_output("Traceback: boom\n")


@pytest.mark.parametrize("argv,name", [(["--device", "tpu"], "--device"), (["--size", "huge"], "--size")])
def test_bad_arguments_exit_2(argv, name, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert name in err and argv[1] in err


def test_packing_bound_steps_train_both_sides():
    """The bound's two hand-written steps are real training steps: measured on a tiny size, each positive."""
    import torch

    b = bench.packing_bound(2, 8, torch.device("cpu"), steps=5, rounds=1)
    assert b["k"] == 2 and b["steps"] == 5 and 0 < b["ratio"] < 100


def test_target_reports_a_bound_below_its_threshold():
    wl = {"mnist-mlp": {"ratios": {"engine/anchor": {"value": 2.1}, "packed-3/engine": {"value": 0.5}},
                        "paths": {}, "bound": {"status": "ok", "k": 3, "ratio": 0.9}}}
    t = {x["id"]: x for x in bench.targets("cpu", "full", wl, {})}
    assert t["cpu-engine-vs-anchor"]["pass"] is True and t["cpu-packed-3"]["pass"] is False
    assert t["cpu-packed-3"]["bound"] == 0.9 and "no packing of this step can meet" in t["cpu-packed-3"]["bound_note"]
    wl["mnist-mlp"]["bound"]["ratio"] = 2.5
    assert "no packing" not in bench.targets("cpu", "full", wl, {})[1]["bound_note"]


@pytest.mark.parametrize("text,want", [(None, ("2",)), ("none", ()), ("2,3x3", ("2", "3x3")), ("4x1", ("4x1",))])
def test_parse_jobs(text, want):
    assert bench.parse_jobs(text, ("2",)) == want


@pytest.mark.parametrize("text", ["1", "3x0", "x3", "two", ""])
def test_bad_jobs_exit_2(text, capsys):
    assert bench.main(["--size", "tiny", "--device", "cpu", "--jobs", text]) == 2
    assert f"--jobs {text!r}" in capsys.readouterr().err


def test_jobs_shape():
    assert bench.jobs_shape("jobs-2") == (2, 1) and bench.jobs_shape("jobs-3x4") == (3, 4)


def test_a_partial_bench_is_labelled(tiny, tmp_path):
    _, res = tiny
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "cpu.partial.json").write_text(json.dumps({**res, "complete": False, "rounds": 1}))
    text = performance_section(str(tmp_path))
    assert "partial: the bench stopped after 1 round(s)" in text
