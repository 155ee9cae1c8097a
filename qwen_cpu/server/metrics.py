"""Server counters, written in the Prometheus text exposition format (version 0.0.4) for /metrics:
HTTP requests by endpoint and status, then every statistic of the scheduler (requests, prompt and
generated tokens, tokens/s, queue depth, busy slots...) under its own name."""

from __future__ import annotations

import threading
from collections import Counter

# Scheduler statistics that go up and down; the others only grow (counters, named ..._total).
GAUGES = ("queue_depth", "slots_busy", "n_seq", "tokens_per_second")


class Metrics:
    """HTTP request counts of one server; thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests = Counter()  # (endpoint, status code) -> count

    def count_request(self, endpoint: str, status: int) -> None:
        with self._lock:
            self.requests[(endpoint, status)] += 1

    def render(self, scheduler_stats: dict) -> str:
        """The exposition text: request counts, then every numeric scheduler statistic."""
        lines = ["# HELP qwen_cpu_http_requests_total HTTP requests answered, by endpoint and status code.",
                 "# TYPE qwen_cpu_http_requests_total counter"]
        with self._lock:
            for (endpoint, status), n in sorted(self.requests.items()):
                lines.append(f'qwen_cpu_http_requests_total{{endpoint="{endpoint}",status="{status}"}} {n}')
        for key, value in sorted(scheduler_stats.items()):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                kind = "gauge" if key in GAUGES else "counter"
                if kind == "counter" and not key.endswith("_total"):
                    key += "_total"
                lines += [f"# HELP qwen_cpu_{key} Scheduler statistic {key} (qwen_cpu.scheduler.Scheduler.stats).",
                          f"# TYPE qwen_cpu_{key} {kind}", f"qwen_cpu_{key} {value:g}" if isinstance(value, float)
                          else f"qwen_cpu_{key} {value}"]
        return "\n".join(lines) + "\n"
