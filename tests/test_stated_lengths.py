"""A run's realised lengths: `validate` simulates a GPUStack run with the token counts its benchmark
client reported ("client result: N successful requests, X input / Y generated tokens") and the
chat template's tokens on each prompt (docs/calibration.md, "GPUStack bursts, session 11")."""
import numpy as np
import pytest

from mistfast import validate as V

from .builders import gpustack_burst_row

RESULT = "client result: 1000 successful requests, 219171 input / 200752 generated tokens, duration 76.59 s"


def test_stated_client_lengths_are_the_totals_per_request():
    assert V.stated_client_lengths("serving command: x; " + RESULT) == pytest.approx((219.171, 200.752))
    assert V.stated_client_lengths("client result: 984 successful requests, 214,141 input / 192,349 generated "
                                   "tokens") == pytest.approx((214141 / 984, 192349 / 984))
    assert V.stated_client_lengths("") == (0.0, 0.0)
    # the datacrunch notes' other wording ("300 completed, ... output tokens") is not this client's line
    assert V.stated_client_lengths("client result: duration 298.37 s, 300 completed, 152612 input / "
                                   "160347 output tokens") == (0.0, 0.0)


def test_scaled_to_mean_by_hand():
    # 4 x 200 scaled to a mean of 105.5: cumulative 105.5, 211, 316.5, 422 round (half to even) to
    # 106, 211, 316, 422 -> 106, 105, 105, 106 (total 422 = 4 x 105.5)
    assert V.scaled_to_mean(np.array([200, 200, 200, 200]), 105.5).tolist() == [106, 105, 105, 106]
    # one factor for all: 100, 300 to a mean of 100 is x 0.5
    assert V.scaled_to_mean(np.array([100, 300]), 100.0).tolist() == [50, 150]
    # never below one token
    assert V.scaled_to_mean(np.array([1, 1000]), 2.0).min() >= 1


def test_chat_template_tokens():
    chat = "vllm bench serve --backend openai-chat --endpoint /v1/chat/completions --num-prompts 1000"
    # ChatML: <|im_start|> user \n ... <|im_end|> \n <|im_start|> assistant \n = 3 + 2 + 3
    assert V.chat_template_tokens("Qwen/Qwen3-14B", chat) == 8
    assert V.chat_template_tokens("Qwen/Qwen3-235B-A22B-Instruct-2507-FP8", chat) == 8
    assert V.chat_template_tokens("openai/gpt-oss-120b", chat) == 0      # not counted (prefix-cached system message)
    assert V.chat_template_tokens("Qwen/Qwen3-14B", "vllm bench serve --backend vllm --endpoint /v1/completions") == 0


def _row(**kw):
    notes = "client result: 50 successful requests, 199795 input / 6803 generated tokens, duration 5 s"
    return gpustack_burst_row(4000, 200, **{"notes": notes, **kw})


@pytest.fixture
def lengths_on(monkeypatch):
    monkeypatch.setattr(V, "STATED_LENGTHS_IN_VALIDATE", True)


def test_off_by_default():
    assert V.STATED_LENGTHS_IN_VALIDATE is False


def test_a_burst_is_simulated_with_the_stated_lengths(lengths_on):
    p = V.plan_row(_row())
    assert p.status == "ok" and p.workload_kind == "offline"
    assert (p.stated_input_mean, p.stated_output_mean, p.template_tokens) == pytest.approx((3995.9, 136.06, 8))
    req = V._points([p])[0].requests
    # fixed 4,000 / 200 become the stated means: 3,995.9 -> 3,995 or 3,996 tokens (total 199,795)
    # plus 8 template tokens; outputs 136.06 -> 136 or 137 (total 6,803): runs that stopped at EOS
    assert int(req.input_tokens.sum()) == 199795 + 50 * 8
    assert set(req.input_tokens.tolist()) <= {3995 + 8, 3996 + 8}
    assert int(req.output_tokens.sum()) == 6803
    assert set(req.output_tokens.tolist()) <= {136, 137}


def test_sharegpt_outputs_are_scaled_not_replaced(lengths_on):
    p = V.plan_row(_row(isl=None, osl=None, dataset="sharegpt", workload=_row()["workload"].replace(
        "random tokens, 4000 input tokens per prompt (vLLM random dataset, range ratio 0), --random-output-len 200",
        "ShareGPT prompts with their ShareGPT output lengths"), notes="client result: 50 successful requests, 10870 input / 10037 generated tokens"))
    assert p.status == "ok" and p.dataset == "sharegpt"
    req = V._points([p])[0].requests
    V.STATED_LENGTHS_IN_VALIDATE = False      # (the fixture restores True and then the default)
    base = V._points([p])[0].requests
    f = (10037 / 50) / base.output_tokens.mean()
    # one factor for every request: the spread and the order of the lengths are kept
    assert req.output_tokens.sum() == 10037 and req.input_tokens.sum() == 10870 + 50 * 8
    assert np.all(np.abs(req.output_tokens - base.output_tokens * f) <= 1.0)
    assert np.corrcoef(req.output_tokens, base.output_tokens)[0, 1] > 0.999


@pytest.mark.parametrize("change", [
    dict(notes=""),                                                       # nothing stated
    dict(workload="online serving, Poisson arrivals at 4 req/s; random tokens (vllm bench serve --backend "
                  "openai-chat --num-prompts 50)", request_rate="4"),     # not a run of exactly the stated prompts
])
def test_rows_that_keep_their_lengths(change, lengths_on):
    p = V.plan_row(_row(**change))
    assert p.status == "ok" and p.stated_output_mean == 0.0 and p.template_tokens == 0
    req = V._points([p])[0].requests
    assert set(req.input_tokens.tolist()) == {4000} and set(req.output_tokens.tolist()) == {200}


def test_switch_off_keeps_the_planned_lengths(monkeypatch):
    monkeypatch.setattr(V, "STATED_LENGTHS_IN_VALIDATE", False)
    req = V._points([V.plan_row(_row())])[0].requests
    assert set(req.input_tokens.tolist()) == {4000} and set(req.output_tokens.tolist()) == {200}
