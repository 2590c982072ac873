"""Which measured run rows the efficiency fit uses: latencies a scheduling policy sets (MLPerf
Server / Interactive bounds) are validated, not fitted (mistfast.calibration.latency_set_by_policy)."""
from mistfast.calibration import latency_set_by_policy

SERVER = ("MLPerf Inference v5.1 Server: MLPerf llama2-70b OpenOrca subset (24,576 samples), Poisson arrivals "
          "at target_qps, p99 TTFT <= 2000 ms, p99 TPOT <= 200 ms")
INTERACTIVE = ("MLPerf Inference v5.1 Interactive: MLPerf llama3.1-8b CNN-DailyMail validation set (13,368 samples), "
               "Poisson arrivals at target_qps, p99 TTFT <= 500 ms, p99 TPOT <= 30 ms")
OFFLINE = "MLPerf Inference v5.1 Offline: MLPerf llama2-70b OpenOrca subset (24,576 samples), all queries issued at t=0"
CLOSED = "random 1024/1024, closed loop at concurrency 64 (benchmark_serving, random-range-ratio 0.8)"


def test_policy_set_latencies():
    for metric in ("ttft_ms", "tpot_ms", "tpot_p99_ms", "ttft_p99_ms", "e2e_mean_ms"):
        assert latency_set_by_policy(metric, SERVER)
        assert latency_set_by_policy(metric, INTERACTIVE)
        assert not latency_set_by_policy(metric, CLOSED)
        assert not latency_set_by_policy(metric, OFFLINE)
    # the throughput of the same runs is fitted: it is what the bound lets through
    for metric in ("output_tok_s", "requests_s"):
        assert not latency_set_by_policy(metric, SERVER)
    assert not latency_set_by_policy("tpot_ms", "")
