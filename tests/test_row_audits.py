"""Row audits of session 8 (docs/ttft-under-load.md, "Row audits"): TensorRT-LLM's attention-DP
balancing wait of the MLPerf DeepSeek-R1 Server rows, and the settings the audited rows carry."""
from pathlib import Path

import pandas as pd
import pytest

from mistfast import validate as V

PUBLIC = Path(__file__).resolve().parents[1] / "data" / "measurements" / "public.csv"


@pytest.mark.parametrize("r, ranks, timeout, batching, q, expected", [
    (0.0, 8, 9, 3, None, 9.0),        # lone arrivals: each opens a window and waits all of it
    (0.0, 8, 9, 3, 0.5, 9.0),
    # r L = 2 < 8 ranks: windows of 10; per window 1 opener (waits 10) + 2 arrivals (uniform 0..10,
    # mean 5): mean (10 + 2 x 5) / 3 = 6.667; median: 1/3 wait 10, 2/3 uniform -> 0.5 x 10 / (2/3) = 7.5
    (0.2, 8, 10, 3, None, 20.0 / 3.0),
    (0.2, 8, 10, 3, 0.5, 7.5),
    (0.2, 8, 10, 3, 0.99, 10.0),
    # r T = 9 >= 8 ranks: every rank has a context before the timeout -> windows of the batching
    # wait, 3: (3 + 1 x 9 / 2) / (1 + 3) = 1.875
    (1.0, 8, 9, 3, None, 1.875),
    (0.5, 8, 0, 0, None, 0.0),
])
def test_adp_balance_wait_by_hand(r, ranks, timeout, batching, q, expected):
    assert V.adp_balance_wait_iters(r, ranks, timeout, batching, q) == pytest.approx(expected)


def _row(ident):
    d = pd.read_csv(PUBLIC)
    return d[d.id == ident].iloc[0].to_dict()


def test_deepseek_r1_server_rows_wait_for_attention_dp_balancing():
    # NVIDIA B200 DeepSeek-R1 Server (configs/B200-SXM-180GBx8/Server/deepseek-r1.py): balancing on,
    # 3 batching-wait and 9 timeout iterations, attention DP over the 8 TP ranks, 5 queries/s
    p = V.plan_row(_row("P4335"))
    assert p.status == "ok" and p.metric == "ttft_ms"
    assert p.adp_balance == (8, 9, 3)
    # 5 q/s x 20 ms = 0.1 arrivals per iteration: windows of 9, mean (9 + 0.1 x 81 / 2) / 1.9 iterations
    expected = (9 + 0.1 * 81 / 2) / 1.9 * 20.0
    assert V.adp_balance_wait_ms(p, {"tpot_mean_ms": 20.0}) == pytest.approx(expected)
    tpot = V.plan_row(_row("P4337"))
    assert V.adp_balance_wait_ms(tpot, {"tpot_mean_ms": 20.0}) == 0.0   # TPOT rows: no wait
    offline = V.plan_row(_row("P4331"))
    assert V.adp_balance_wait_ms(offline, {"tpot_mean_ms": 20.0}) == 0.0


def test_redhat_vllm_rows_run_with_the_submitters_flags():
    server = V.plan_row(_row("P4646"))
    sched = server.scenario["clients"][0]["scheduler"]
    assert (sched["max_batch_size"], sched["max_batched_tokens"]) == (512, 1024)
    offline = V.plan_row(_row("P4642"))
    sched = offline.scenario["clients"][0]["scheduler"]
    assert (sched["max_batch_size"], sched["max_batched_tokens"]) == (1024, 4096)


def test_harness_tool_appends_the_balancing_settings_to_an_existing_segment(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("mhs", PUBLIC.parents[2] / "tools" / "mlperf_harness_settings.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    repo = tmp_path / "results"
    cfg = repo / "closed/X/configs/SYS/Server/deepseek-r1.py"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("base = {\n    llm_fields.trtllm_runtime_flags: {\n        'enable_chunked_context': False,\n"
                   "        \"adp_balancing_enable\": True,\n        \"adp_balancing_batching_wait_iters\": 3,\n"
                   "        \"adp_balancing_timeout_iters\": 9,\n    },\n    harness_fields.use_graphs: True,\n}\n")
    old = (f"parallelism from {cfg.relative_to(repo)}; harness settings from that config: use_graphs True, "
           "enable_chunked_context False; engine limits from that config: max batch 512")
    new = tool.annotated_notes(old, repo)
    assert new == (f"parallelism from {cfg.relative_to(repo)}; harness settings from that config: use_graphs True, "
                   "enable_chunked_context False, adp_balancing_enable True, adp_balancing_batching_wait_iters 3, "
                   "adp_balancing_timeout_iters 9; engine limits from that config: max batch 512")
    assert tool.annotated_notes(new, repo) == new      # idempotent
