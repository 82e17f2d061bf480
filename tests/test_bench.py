"""The benchmark command (issue 11, issue 18's real-CIFAR-10 workload): one tiny CPU run's JSON contract, its
REPORT.md section, the anchor-output parser and the argument errors."""
import json
import math
import os
import pickle

import pytest
import torch
import torchvision
from fixtures_data import write_cifar_webp

from benchmarks.perf import bench
from benchmarks.report.performance import performance_section


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, data_root):
    """A tiny CPU bench on real MNIST and a tiny CIFAR-10 copy in the real WebP format (300 train, 70 test)."""
    out = tmp_path_factory.mktemp("bench")
    root = tmp_path_factory.mktemp("data")
    os.symlink(os.path.join(data_root, "MNIST"), root / "MNIST")
    write_cifar_webp(str(root), "cifar10", n_train=300, n_test=70, per_file=100, per_row=10)
    assert bench.main(["--size", "tiny", "--device", "cpu", "--out", str(out), "--data", str(root)]) == 0
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
    assert set(res["workloads"]) == {"mnist-mlp", "cifar-resnet20", "cifar10-resnet20"}
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
    assert set(ids) == {"cpu-engine-vs-anchor", "cpu-packed-3", "cpu-cifar10-engine-vs-anchor"}
    for t in ids.values():  # tiny measures no target: each says so, with its threshold
        assert t["threshold"] == 2.0 and t["op"] == ">=" and t["measured"] == "not measured" and t["pass"] is None
        assert "--size tiny" in t["reason"]


def test_cifar10_workload(tiny):
    """Real-CIFAR-10 ResNet-20 (issue 18): the anchor (torchvision CIFAR10 + DataLoader) and the engine paths on
    the same images, the matmul rate, the FLOPs and what they give per path, the whole-run figure."""
    _, res = tiny
    w = res["workloads"]["cifar10-resnet20"]
    assert set(w["paths"]) == {"anchor", "engine", "engine-eager-nchw", "engine-compiled", "engine-bf16"}
    for name in ("anchor", "engine", "engine-eager-nchw", "engine-bf16"):
        p = w["paths"][name]
        assert p["status"] == "ok", (name, p)
        assert p["images"] == 256 and len(p["rounds_s"]) == res["rounds"] and all(s > 0 for s in p["rounds_s"])
        assert math.isclose(p["images_per_s"], p["images"] / p["epoch_s"])
        assert 0 <= p["test_acc"] <= 100
    a = w["paths"]["anchor"]
    assert a["workers"] == 2 and "benchmarks/perf/anchors/cifar10_loop.py" in a["command"] and "--subset 256" in a["command"]
    assert w["paths"]["engine"].get("options") is None  # the bench's own options (res["engine_options"])
    assert w["paths"]["engine-eager-nchw"]["options"] == {"amp": "none", "channels_last": False, "compile": False,
                                                          "fused": False}
    # another arithmetic, measured beside the float32 default (engine/options.py: why the default stays float32)
    assert w["paths"]["engine-bf16"]["options"] == {"amp": "bf16", "channels_last": True, "compile": False,
                                                    "fused": True}
    bf = res["matmul_bf16"]
    assert bf["status"] == "ok" and bf["dtype"] == "bfloat16" and bf["gflops"] > 0
    p = w["paths"]["engine-bf16"]  # its share is of the bf16 matmul rate, its own arithmetic's peak
    assert math.isclose(p["of_matmul_peak"], p["train_gflops_per_s"] / bf["gflops"])
    c = w["paths"]["engine-compiled"]  # tiny: skipped (compiling takes tens of seconds on a CPU), with a reason
    assert c["status"] == "skipped" and "--size tiny" in c["reason"]
    assert w["spec"]["data"]["dataset"] == "cifar10" and w["spec"]["data"]["train_subset"] == 256
    for key in ("engine/anchor", "engine-eager-nchw/anchor", "engine-eager-nchw/engine"):
        num, den = key.split("/")
        assert math.isclose(w["ratios"][key]["value"],
                            w["paths"][num]["images_per_s"] / w["paths"][den]["images_per_s"])
    assert w["ratios"]["engine-compiled/anchor"] == "not measured"
    mm = res["matmul"]  # one large fp32 matmul's rate: 2 n^3 / the median seconds
    assert mm["status"] == "ok" and mm["op"] == "torch.mm" and mm["dtype"] == "float32" and mm["reps"] >= 3
    assert mm["gflops"] > 0 and math.isclose(mm["gflops"], 2 * mm["n"] ** 3 / mm["seconds_median"] / 1e9)
    f = w["flops"]  # ResNet-20 (0.27M parameters): about 41M multiply-adds per 32 x 32 image forward
    assert 70e6 < f["forward_per_image"] < 95e6 and f["train_per_image"] == 3 * f["forward_per_image"]
    assert res["workloads"]["cifar-resnet20"]["flops"] == f
    for name in ("anchor", "engine", "engine-eager-nchw"):
        p = w["paths"][name]
        assert math.isclose(p["train_gflops_per_s"], p["images_per_s"] * f["train_per_image"] / 1e9)
        assert math.isclose(p["of_matmul_peak"], p["train_gflops_per_s"] / mm["gflops"])
    wr = w["whole_run"]
    assert wr["epochs"] == 160 and wr["images_per_epoch"] == 50_000 and wr["seconds"]["engine-compiled"] is None
    assert math.isclose(wr["seconds"]["engine"], 160 * 50_000 / w["paths"]["engine"]["images_per_s"])
    assert wr["fastest"] in ("anchor", "engine", "engine-eager-nchw", "engine-bf16")
    assert any("MD5" in n for n in w["notes"])  # why torchvision's own check is skipped


def test_cifar10_missing_is_skipped(tmp_path):
    """No CIFAR-10 under the data root: the workload is skipped with the reason; the bench still finishes."""
    (tmp_path / "data").mkdir()
    assert bench.main(["--size", "tiny", "--device", "cpu", "--out", str(tmp_path / "out"), "--data",
                       str(tmp_path / "data"), "--workloads", "cifar10-resnet20", "--no-overhead"]) == 0
    res = json.loads((tmp_path / "out" / "cpu.json").read_text())
    w = res["workloads"]["cifar10-resnet20"]
    assert w["status"] == "skipped" and "CIFAR-10 not found" in w["reason"] and str(tmp_path / "data") in w["reason"]
    t = {x["id"]: x for x in res["targets"]}["cpu-cifar10-engine-vs-anchor"]
    assert t["measured"] == "not measured" and t["pass"] is None
    assert res["matmul"]["status"] == "ok"


def test_torchvision_cifar10_copy(tmp_path):
    """The anchor's files: the decoded arrays in torchvision's layout, read back unchanged by torchvision's CIFAR10
    (MD5 check skipped, as benchmarks/perf/anchors/cifar10_loop.py does) and, with encoding="bytes", as b"data"."""
    from data import Splits

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (23, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (23,), generator=g)
    splits = Splits("cifar10", x[:17], y[:17], x[17:], y[17:], 10, "image")
    bench.write_torchvision_cifar10(splits, str(tmp_path))

    class Copy(torchvision.datasets.CIFAR10):
        meta = {**torchvision.datasets.CIFAR10.meta, "md5": None}

        def _check_integrity(self):
            return True

    for train, xs, ys in ((True, x[:17], y[:17]), (False, x[17:], y[17:])):
        ds = Copy(str(tmp_path), train=train, download=False)
        assert (torch.from_numpy(ds.data).permute(0, 3, 1, 2) == xs).all() and ds.targets == ys.tolist()
    assert ds.classes[0] == "airplane" and len(ds.classes) == 10
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as fh:
        d = pickle.load(fh, encoding="bytes")
    assert d[b"data"].dtype.name == "uint8" and d[b"data"].shape[1] == 3072 and isinstance(d[b"labels"], list)


def test_whole_run_counts_compile_once():
    paths = {"anchor": {"status": "ok", "images_per_s": 250.0},
             "engine": {"status": "ok", "images_per_s": 500.0},
             "engine-compiled": {"status": "ok", "images_per_s": 625.0, "compile_s": 40.0},
             "engine-eager-nchw": {"status": "failed", "reason": "x"}}
    wr = bench.whole_run(paths, 160, 50_000)
    assert wr["seconds"] == {"anchor": 32000.0, "engine": 16000.0, "engine-compiled": 40.0 + 12800.0,
                             "engine-eager-nchw": None}
    assert wr["fastest"] == "engine-compiled"
    assert bench.whole_run(dict(paths, **{"engine-compiled": dict(paths["engine-compiled"], compile_s=4000.0)}),
                           160, 50_000)["fastest"] == "engine"
    # bf16 autocast is another arithmetic: "fastest" names the float32 default's, the other is named apart
    bf = dict(paths, **{"engine-bf16": {"status": "ok", "images_per_s": 1300.0,
                                        "options": {"amp": "bf16", "channels_last": True}}})
    wr = bench.whole_run(bf, 160, 50_000)
    assert wr["fastest"] == "engine-compiled" and wr["fastest_any_arithmetic"] == "engine-bf16"


def test_cifar10_target():
    def wl(images, value):
        return {"cifar10-resnet20": {"ratios": {"engine/anchor": {"value": value}},
                                     "paths": {"anchor": {"status": "ok"}, "engine": {"status": "ok", "images": images}}}}

    for dev in ("cpu", "cuda"):
        t = {x["id"]: x for x in bench.targets(dev, "full", wl(50_000, 2.4), {})}[f"{dev}-cifar10-engine-vs-anchor"]
        assert t["measured"] == 2.4 and t["pass"] is True and t["threshold"] == 2.0
    t = {x["id"]: x for x in bench.targets("cpu", "full", wl(50_000, 1.5), {})}["cpu-cifar10-engine-vs-anchor"]
    assert t["pass"] is False
    t = {x["id"]: x for x in bench.targets("cpu", "full", wl(1024, 3.0), {})}["cpu-cifar10-engine-vs-anchor"]
    assert t["measured"] == "not measured" and "1024" in t["reason"]


def test_performance_section(tiny, tmp_path):
    out, res = tiny
    text = performance_section(str(out))
    assert "## Performance" in text and res["device"] in text and res["torch"] in text and res["date"] in text
    assert "| mnist-mlp | engine |" in text and "packed-2/engine" in text and "not measured" in text
    assert ">= 2" in text
    assert "| cifar10-resnet20 | engine |" in text and "engine-eager-nchw/engine" in text
    assert "| cifar10-resnet20 | engine-compiled | skipped: --size tiny" in text
    assert f"{res['matmul']['gflops']:.1f} GFLOP/s" in text and "Whole run (cifar10-resnet20, 160 epochs" in text
    assert "FLOPs (cifar10-resnet20): ResNet-20 forward" in text
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
