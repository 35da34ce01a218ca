"""The load report's wire forms (ORCA ``endpoint-load-metrics``, vLLM's gauges) and the time average behind it."""

from __future__ import annotations

import math

import pytest

from common.load_report import (
    IN_FLIGHT,
    IN_FLIGHT_AVG,
    LATENCY_AVG,
    RUNNING,
    WAITING,
    TimeAverage,
    format_report,
    header_load,
    load_from_prometheus,
    parse_report,
)


def test_a_report_reads_back_as_written() -> None:
    value = format_report({IN_FLIGHT: 12, IN_FLIGHT_AVG: 10.25, LATENCY_AVG: 0.052, RUNNING: 8, WAITING: 4})
    assert value.startswith(b"TEXT named_metrics.")
    assert parse_report(value) == {IN_FLIGHT: 12.0, IN_FLIGHT_AVG: 10.25, LATENCY_AVG: 0.052, RUNNING: 8.0,
                                   WAITING: 4.0}
    assert header_load(value) == (12.0, 10.25, 0.052)


@pytest.mark.parametrize("value", [
    b"TEXT named_metrics.num_requests_running=3, named_metrics.num_requests_waiting=2",  # vLLM's Python form
    b"named_metrics.num_requests_running=3,named_metrics.num_requests_waiting=2",  # its Rust front end's
    b'JSON {"named_metrics": {"num_requests_running": 3, "num_requests_waiting": 2}}',
    b"TEXT cpu_utilization=0.3, named_metrics.num_requests_running=3.0, named_metrics.num_requests_waiting=2.0",
])
def test_running_and_waiting_make_the_load_when_no_request_count_is_given(value: bytes) -> None:
    assert header_load(value) == (5.0, None, None)


@pytest.mark.parametrize("value", [
    b"TEXT named_metrics.kv_cache_usage_perc=0.4, named_metrics.num_requests_waiting=3",  # vLLM's own: a queue only
    b"TEXT named_metrics.genrm_requests_in_flight=nan",
    b"TEXT named_metrics.genrm_requests_in_flight=-2",
    b"JSON {not json",
    b"",
])
def test_what_does_not_say_the_whole_load_gives_none(value: bytes) -> None:
    assert header_load(value)[0] is None


def test_the_average_alone_is_kept() -> None:
    assert header_load(b"TEXT named_metrics.genrm_requests_in_flight_avg=7.5") == (None, 7.5, None)


def test_vllm_gauges_are_summed_over_their_series() -> None:
    text = "\n".join([
        "# HELP vllm:num_requests_running Number of requests in model execution batches.",
        "# TYPE vllm:num_requests_running gauge",
        'vllm:num_requests_running{engine="0",model_name="judge"} 3.0',
        'vllm:num_requests_running{engine="1",model_name="judge"} 2.0',
        'vllm:num_requests_waiting{engine="0",model_name="judge"} 4.0 1700000000000',  # with a timestamp
        'vllm:num_requests_waiting_by_reason{reason="capacity"} 9.0',  # another metric sharing the prefix
        "vllm:num_requests_swapped 7.0",
    ])
    assert load_from_prometheus(text) == 9.0
    assert load_from_prometheus("vllm:num_requests_waiting 0\n") == 0.0
    assert load_from_prometheus('genrm_server_requests_total{route="/ready"} 3.0\n') is None


def test_the_time_average_weighs_time_not_samples() -> None:
    avg = TimeAverage(tau_s=2.0)
    assert avg.add(10.0, now=100.0) == 10.0  # the first sample is taken whole
    avg.add(0.0, now=102.0)  # one time constant at 0
    assert avg.value == pytest.approx(10.0 * math.exp(-1))
    # Many samples close together move it no more than one sample over the same span: a replica hearing a
    # worker often and one hearing it rarely come to the same figure.
    often, rarely = TimeAverage(2.0), TimeAverage(2.0)
    often.add(0.0, 0.0)
    rarely.add(0.0, 0.0)
    for i in range(1, 101):
        often.add(20.0, i * 0.01)
    rarely.add(20.0, 1.0)
    assert often.value == pytest.approx(rarely.value)
