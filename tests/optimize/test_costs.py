"""The measured cost model: bytes and intensity worked by hand, the table's keys (each part of the
key faked in turn re-measures), corrupt tables named and never trusted, an interrupted run resumed,
end-to-end timing. A tiny timing plan everywhere: nothing timed decides a result."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from torch import nn

from sepconv import machine
from sepconv.deploy import get_engine
from sepconv.deploy.engines import TorchEngine
from sepconv.optimize import costs
from sepconv.optimize.cache import CacheWarning, key_digest
from sepconv.optimize.costs import (
    COST_TABLE_FORMAT,
    CostTable,
    candidate_bytes,
    candidate_weights,
    default_cost_table_path,
    measure_costs,
    time_models,
)
from sepconv.optimize.sites import Site, find_sites
from sepconv.timing import TimingPlan

TINY = TimingPlan(warmup_calls=0, min_rounds=1, min_run_seconds=0, calls_per_block=1, settle_seconds=0)


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1),
    )


def _sites() -> list[Site]:
    sites, _ = find_sites(_net(), (3, 8, 8))
    return sites


class CountingEngine(TorchEngine):
    """The torch engine, counting the candidates it is asked to prepare."""

    def __init__(self, version: str = "test-1") -> None:
        self.prepared: list[int] = []
        self._version = version

    def version(self) -> str:
        return self._version

    def prepare_many(self, modules, examples, folder, *, threads):  # type: ignore[no-untyped-def]
        self.prepared.append(len(modules))
        return super().prepare_many(modules, examples, folder, threads=threads)


def _measure(model, sites, engine, table, **settings):  # type: ignore[no-untyped-def]
    options = {"batch_size": 2, "threads": 1, "timing_plan": TINY, **settings}
    return measure_costs(model, sites, engine, table=table, **options)


def _candidates(sites: list[Site]) -> int:
    return sum(len(site.ranks) + 1 for site in sites)


def test_the_default_table_path_follows_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("SEPCONV_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cost_table_path() == tmp_path / "mine" / "costs.json"
    monkeypatch.delenv("SEPCONV_CACHE_DIR")
    assert default_cost_table_path() == tmp_path / "xdg" / "sepconv" / "costs.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cost_table_path() == tmp_path / "home" / ".cache" / "sepconv" / "costs.json"


def test_bytes_and_intensity_of_a_convolution_worked_by_hand(tmp_path) -> None:
    sites, _ = find_sites(nn.Sequential(nn.Conv2d(8, 16, 3, padding=1)), (8, 8, 8))
    (site,) = sites
    # keep, batch 2: input 2*8*64 = 1024, output 2*16*64 = 2048, weights 16*8*9 + 16 = 1168
    assert candidate_weights(site, None) == 1168
    assert candidate_bytes(site, None, batch_size=2, bytes_per_element=4) == 4 * (1024 + 2048 + 1168)
    # rank 2: depthwise 8*2*9 = 144, pointwise 16*16 = 256, bias 16; the 16-channel 8x8 depthwise
    # output of both images, written and read: 2 * 2*16*64 = 4096
    assert candidate_weights(site, 2) == 144 + 256 + 16
    assert candidate_bytes(site, 2, batch_size=2, bytes_per_element=1) == 1024 + 2048 + 416 + 4096
    engine = CountingEngine()
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1))
    cost = _measure(model, sites, engine, CostTable(tmp_path / "costs.json"))["0"]
    assert cost[None].macs == 64 * 16 * 8 * 9 and cost[2].macs == 64 * 8 * 2 * (9 + 16)
    assert cost[None].bytes == 16960 and cost[2].bytes == 4 * 7584
    assert math.isclose(cost[None].intensity, 2 * 73728 / 16960)
    assert math.isclose(cost[2].intensity, 2 * 25600 / (4 * 7584))


def test_bytes_of_a_low_rank_linear_pair_worked_by_hand() -> None:
    site = Site(
        "fc", "linear", {"in_features": 512, "out_features": 256, "bias": True}, (512,), (256,), 0, 256, (8,)
    )
    # keep: 512*256 + 256 weights; batch 4: 4*512 + 4*256 activations
    assert candidate_bytes(site, None, batch_size=4, bytes_per_element=4) == 4 * (3072 + 131328)
    # rank 8: 8*(512 + 256) + 256 weights; 4 rows of 8 features written and read
    assert candidate_bytes(site, 8, batch_size=4, bytes_per_element=4) == 4 * (3072 + 6400 + 64)


def test_every_candidate_is_measured_once_and_then_read_from_the_table(tmp_path) -> None:
    model, sites = _net(), _sites()
    engine = CountingEngine()
    first = _measure(model, sites, engine, CostTable(tmp_path / "costs.json"))
    assert list(first) == [site.name for site in sites]
    for site in sites:
        assert list(first[site.name]) == [None, *site.ranks]
        assert all(not cost.cached and cost.ms >= 0 for cost in first[site.name].values())
        assert all(cost.site == site.name and cost.batch_size == 2 for cost in first[site.name].values())
    assert engine.prepared == [_candidates(sites)]  # a small model's candidates: one engine call
    document = json.loads((tmp_path / "costs.json").read_text())
    assert document["format"] == COST_TABLE_FORMAT and len(document["records"]) == _candidates(sites)

    again = CountingEngine()
    second = _measure(model, sites, again, CostTable(tmp_path / "costs.json"))
    assert again.prepared == []
    for site in sites:
        for rank, cost in second[site.name].items():
            assert cost.cached and cost.ms == first[site.name][rank].ms
            assert cost.spread_ms == first[site.name][rank].spread_ms


@pytest.mark.parametrize(
    "change",
    ["cpu features", "cpu model", "engine version", "threads", "batch size", "torch version"],
)
def test_a_changed_key_part_measures_everything_again(change, monkeypatch, tmp_path) -> None:
    model, sites = _net(), _sites()
    path = tmp_path / "costs.json"
    _measure(model, sites, CountingEngine(), CostTable(path))
    engine, settings = CountingEngine(), {}
    if change == "cpu features":
        monkeypatch.setattr(
            machine, "cpu_features", lambda: machine.CpuFeatures(avx2=True, avx512=True, vnni=True)
        )
    elif change == "cpu model":
        monkeypatch.setattr(machine, "cpu_model_name", lambda: "Another CPU 9000")
    elif change == "engine version":
        engine = CountingEngine(version="test-2")
    elif change == "threads":
        settings = {"threads": 2}
    elif change == "batch size":
        settings = {"batch_size": 3}
    else:
        monkeypatch.setattr(torch, "__version__", "9.9.9")
    result = _measure(model, sites, engine, CostTable(path), **settings)
    assert sum(engine.prepared) == _candidates(sites)
    assert not any(cost.cached for site in result.values() for cost in site.values())
    assert len(json.loads(path.read_text())["records"]) == 2 * _candidates(sites)  # both kept


def _bad_record(value: object) -> str:
    return json.dumps({"format": COST_TABLE_FORMAT, "records": {key_digest({}): {"key": {}, "value": value}}})


@pytest.mark.parametrize(
    "content, reason",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"format": "something-else/1", "records": {}}), "not a sepconv-costs/1 table"),
        (json.dumps([1, 2]), "not a sepconv-costs/1 table"),
        (json.dumps({"format": COST_TABLE_FORMAT, "records": []}), "records are not a JSON object"),
        (_bad_record({"ms": "fast", "spread_ms": None}), "not a measurement"),
        (_bad_record({"ms": -1.0, "spread_ms": None}), "not a measurement"),
        (_bad_record({"ms": True, "spread_ms": None}), "not a measurement"),
        (_bad_record({"ms": 1.0, "spread_ms": "wide"}), "not a measurement"),
    ],
)
def test_a_corrupt_table_is_named_and_measured_again(content, reason, tmp_path) -> None:
    model, sites = _net(), _sites()
    path = tmp_path / "costs.json"
    path.write_text(content)
    with pytest.warns(CacheWarning, match=f"{path}: .*{reason}.* will be redone"):
        table = CostTable(path)
    engine = CountingEngine()
    _measure(model, sites, engine, table)
    assert sum(engine.prepared) == _candidates(sites)
    document = json.loads(path.read_text())  # replaced by a good table
    assert document["format"] == COST_TABLE_FORMAT and len(document["records"]) == _candidates(sites)


def test_a_record_whose_time_was_edited_to_a_wrong_type_makes_the_file_untrusted(tmp_path) -> None:
    model, sites = _net(), _sites()
    path = tmp_path / "costs.json"
    _measure(model, sites, CountingEngine(), CostTable(path))
    document = json.loads(path.read_text())
    next(iter(document["records"].values()))["value"]["ms"] = [1.0]
    path.write_text(json.dumps(document))
    with pytest.warns(CacheWarning, match="not a measurement"):
        assert len(CostTable(path)) == 0


def test_an_interrupted_run_keeps_the_finished_sites_and_the_next_measures_only_the_rest(tmp_path) -> None:
    model, sites = _net(), _sites()
    assert len(sites) == 3
    path = tmp_path / "costs.json"
    reports = []

    def interrupt_after_two(description: str, done: int, total: int) -> None:
        reports.append((done, total))
        if done == 2:
            raise KeyboardInterrupt

    engine = CountingEngine()
    with pytest.raises(KeyboardInterrupt):
        _measure(model, sites, engine, CostTable(path), progress=interrupt_after_two)
    assert reports == [(0, 3), (1, 3), (2, 3)]
    saved = json.loads(path.read_text())["records"]
    assert len(saved) == _candidates(sites[:2])
    resumed = CountingEngine()
    result = _measure(model, sites, resumed, CostTable(path))
    assert resumed.prepared == [len(sites[2].ranks) + 1]
    assert [all(cost.cached for cost in result[site.name].values()) for site in sites] == [True, True, False]


def test_two_tables_on_one_file_keep_each_others_entries(tmp_path) -> None:
    model, sites = _net(), _sites()
    path = tmp_path / "costs.json"
    first, second = CostTable(path), CostTable(path)
    _measure(model, sites[:1], CountingEngine(), first)
    _measure(model, sites[1:], CountingEngine(), second)
    assert len(CostTable(path)) == _candidates(sites)


def test_costs_in_onnx_runtime_are_measured_on_the_sites_real_shapes(tmp_path) -> None:
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2))
    sites, _ = find_sites(model, (4, 10, 10))
    result = _measure(model, sites, get_engine("ort"), CostTable(tmp_path / "costs.json"))
    assert {name: list(ranks) for name, ranks in result.items()} == {
        site.name: [None, *site.ranks] for site in sites
    }
    records = json.loads((tmp_path / "costs.json").read_text())["records"]
    key = next(iter(records.values()))["key"]
    assert key["engine"]["name"] == "ort" and key["batch_size"] == 2 and key["threads"] == 1
    assert key["cpu"]["features"] == machine.cpu_features().to_dict()


@pytest.mark.parametrize("name", ["openvino", "openvino-int8"])
def test_costs_are_measured_on_openvino_and_keyed_by_its_version(name, tmp_path) -> None:
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2))
    sites, _ = find_sites(model, (4, 10, 10))
    engine = get_engine(name)
    result = _measure(model, sites, engine, CostTable(tmp_path / "costs.json"))
    assert {site: list(ranks) for site, ranks in result.items()} == {
        site.name: [None, *site.ranks] for site in sites
    }
    records = json.loads((tmp_path / "costs.json").read_text())["records"]
    key = next(iter(records.values()))["key"]
    # an OpenVINO (or NNCF) upgrade changes the key, so its costs are measured again
    assert key["engine"]["name"] == name and key["engine"]["version"] == engine.version()


def test_time_models_times_each_model_end_to_end(tmp_path) -> None:
    plan = TimingPlan(warmup_calls=0, min_rounds=2, min_run_seconds=0, calls_per_block=1, settle_seconds=0)
    first = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4))
    first(torch.zeros(1, 3, 8, 8))
    second = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(4))
    second(torch.zeros(1, 3, 8, 8))
    for name in ("ort", "ort-int8", "torch"):  # int8 without calibration: random batches stand in
        timings = time_models(
            {"b": second, "a": first}, (3, 8, 8), get_engine(name), batch_size=2, threads=1, timing_plan=plan
        )
        assert list(timings) == ["b", "a"]
        assert all(len(timing.seconds) == 2 and timing.calls_per_block == 1 for timing in timings.values())


def test_an_unknown_engine_state_is_refused_before_anything_is_measured(monkeypatch, tmp_path) -> None:
    engine = CountingEngine()
    monkeypatch.setattr(engine, "unavailable_reason", lambda: "the test says so")
    with pytest.raises(ValueError, match="engine torch cannot run here: the test says so"):
        _measure(_net(), _sites(), engine, CostTable(tmp_path / "costs.json"))
    assert engine.prepared == [] and not (tmp_path / "costs.json").exists()
    with pytest.raises(ValueError, match="batch_size"):
        _measure(_net(), _sites(), CountingEngine(), CostTable(tmp_path / "costs.json"), batch_size=0)
    assert costs.LAYER_TIMING.min_rounds >= 5


class _Pair(nn.Module):
    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return first * second


class _Halves(nn.Module):
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return images.chunk(2, dim=1)


class _Awkward(nn.Module):
    """Rows that cannot run alone: two inputs, a tuple out, the container's own work, a layer never called."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.halves = _Halves()
        self.pair = _Pair()
        self.scale = nn.Parameter(torch.ones(1))
        self.unused = nn.Linear(2, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        first, second = self.halves(self.act(self.conv(images)))
        return self.pair(first, second) * self.scale


class _NoReluEngine(CountingEngine):
    """An engine that cannot run a ReLU: the rows are then prepared one by one to find it."""

    def prepare_many(self, modules, examples, folder, *, threads):  # type: ignore[no-untyped-def]
        if any(isinstance(module, nn.ReLU) for module in modules):
            from sepconv.deploy import PathUnavailableError

            self.prepared.append(len(modules))
            raise PathUnavailableError("no ReLU here")
        return super().prepare_many(modules, examples, folder, threads=threads)


def test_a_summary_row_that_cannot_run_alone_says_why(tmp_path) -> None:
    from sepconv.analysis import summarize
    from sepconv.optimize.costs import measure_summary

    model = _Awkward()
    summary = summarize(model, (2, 3, 6, 6))
    engine = _NoReluEngine()
    measured = measure_summary(
        model, summary, engine, threads=1, table=CostTable(tmp_path / "c.json"), timing_plan=TINY
    )
    rows = {layer.name: layer.measured for layer in measured.layers}
    assert rows["conv"].ms is not None and rows["conv"].reason is None
    # 2x3x6x6 in, 2x4x6x6 out, 4*3*9 + 4 weights, fp32
    assert rows["conv"].bytes == 4 * (216 + 288 + 112)
    assert rows["act"].ms is None and rows["act"].reason == "torch cannot run it alone (no ReLU here)"
    assert rows["halves"].reason == "returns tuple, not one tensor"
    assert rows["pair"].reason.startswith("cannot run alone on one input of its shape")
    assert rows[""].reason == "a container's own operations: they run only inside its forward"
    assert rows["unused"].reason == "not called in the forward pass" and rows["unused"].bytes == 0
    assert engine.prepared == [2, 1, 1]  # conv and act together, refused; then one by one
    assert measured.measurement["engine"]["name"] == "torch" and measured.measurement["batch_size"] == 2
    text = str(measured)  # each reason once, as a footnote the rows point to
    assert re.search(
        r"^act .* - \[(\d)\] .*^\[\1\] torch cannot run it alone \(no ReLU here\)$", text, re.M | re.S
    )
    assert model.training  # the model is left as it was


def test_a_linear_site_is_measured_as_low_rank_pairs_in_onnx_runtime(tmp_path) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(512, 256))
    sites, _ = find_sites(model, (8, 8, 8))
    (site,) = sites
    assert site.kind == "linear"
    result = _measure(model, sites, get_engine("ort"), CostTable(tmp_path / "costs.json"), batch_size=4)
    assert list(result[site.name]) == [None, *site.ranks]
    pair = result[site.name][8]
    # 4 rows of 512 in and 256 out, 8 (512 + 256) + 256 weights, 4 rows of 8 written and read; fp32
    assert pair.bytes == 4 * (4 * 768 + 6400 + 64) and pair.macs == 8 * 768
    assert pair.intensity == pytest.approx(4 * 8 * 768 / pair.bytes)


def test_large_candidates_are_prepared_in_batches_of_whole_sites(monkeypatch, tmp_path) -> None:
    model, sites = _net(), _sites()
    first_site = sum(costs.candidate_weights(sites[0], rank) for rank in (None, *sites[0].ranks))
    monkeypatch.setattr(costs, "_BATCH_WEIGHTS", first_site)  # the first site fills a batch alone
    engine = CountingEngine()
    result = _measure(model, sites, engine, CostTable(tmp_path / "costs.json"))
    assert engine.prepared[0] == len(sites[0].ranks) + 1 and sum(engine.prepared) == _candidates(sites)
    monkeypatch.setattr(costs, "_BATCH_WEIGHTS", 1)  # each site alone, however small
    again = CountingEngine()
    _measure(model, sites, again, CostTable(tmp_path / "other.json"))
    assert again.prepared == [len(site.ranks) + 1 for site in sites]
    assert not any(cost.cached for site in result.values() for cost in site.values())


def test_a_repeated_block_is_measured_once_and_its_twins_read_the_table(tmp_path) -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
    )
    sites, _ = find_sites(model, (3, 8, 8))
    engine = CountingEngine()
    result = _measure(model, sites, engine, CostTable(tmp_path / "costs.json"))
    assert engine.prepared == [len(sites[0].ranks) + 1 + len(sites[1].ranks) + 1]
    assert not any(cost.cached for cost in result["1"].values())
    assert all(cost.cached for cost in result["2"].values())  # the same geometry and input as "1"
    assert {rank: cost.ms for rank, cost in result["2"].items()} == {
        rank: cost.ms for rank, cost in result["1"].items()
    }
