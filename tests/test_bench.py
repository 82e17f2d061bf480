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
    _, res = tiny
    for key in ("device", "device_class", "cpu", "cores", "threads", "torch", "date", "size", "rounds", "workloads",
                "overhead", "targets", "engine_options"):
        assert key in res, key
    assert res["device_class"] == "cpu" and res["size"] == "tiny" and res["device"]
    assert res["cores"] >= 1 and res["threads"] >= 1 and res["date"].endswith("+00:00")
    assert set(res["workloads"]) == {"mnist-mlp", "cifar-resnet20"}
    mnist, cifar = res["workloads"]["mnist-mlp"], res["workloads"]["cifar-resnet20"]
    assert set(mnist["paths"]) == {"anchor", "engine", "packed-2"}
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
        for key, r in w["ratios"].items():
            if r == "not measured":
                continue
            num, den = key.split("/")
            assert math.isclose(r["value"], w["paths"][num]["images_per_s"] / w["paths"][den]["images_per_s"])
            assert math.isclose(r["median"], w["paths"][num]["images_per_s_median"]
                                / w["paths"][den]["images_per_s_median"])
    assert isinstance(mnist["ratios"]["engine/anchor"], dict)
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
