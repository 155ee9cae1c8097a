"""Server counters, written in the Prometheus text exposition format (version 0.0.4) for /metrics."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

RATE_WINDOW = 10.0  # seconds over which the tokens/s gauge is averaged


class Metrics:
    """Request and token counters of one server; thread-safe (updated from the event loop and
    read from any thread)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests = Counter()  # (endpoint, status code) -> count
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self._token_times: deque[float] = deque()  # monotonic time of each generated token in the window

    def count_request(self, endpoint: str, status: int) -> None:
        with self._lock:
            self.requests[(endpoint, status)] += 1

    def count_prompt(self, n: int) -> None:
        with self._lock:
            self.prompt_tokens += n

    def count_token(self) -> None:
        now = time.monotonic()
        with self._lock:
            self.generation_tokens += 1
            self._token_times.append(now)
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._token_times and self._token_times[0] < now - RATE_WINDOW:
            self._token_times.popleft()

    def tokens_per_second(self) -> float:
        """Generated tokens per second over the last RATE_WINDOW seconds (all streams together)."""
        with self._lock:
            self._trim(time.monotonic())
            return len(self._token_times) / RATE_WINDOW

    def render(self, scheduler_stats: dict) -> str:
        """The exposition text: our counters, then every numeric scheduler statistic as a gauge."""
        lines = ["# HELP qwen_cpu_requests_total HTTP requests answered, by endpoint and status code.",
                 "# TYPE qwen_cpu_requests_total counter"]
        with self._lock:
            for (endpoint, status), n in sorted(self.requests.items()):
                lines.append(f'qwen_cpu_requests_total{{endpoint="{endpoint}",status="{status}"}} {n}')
            counters = [("prompt_tokens_total", "Prompt tokens of accepted requests.", self.prompt_tokens),
                        ("generation_tokens_total", "Tokens generated and sent.", self.generation_tokens)]
        for name, help_text, value in counters:
            lines += [f"# HELP qwen_cpu_{name} {help_text}", f"# TYPE qwen_cpu_{name} counter",
                      f"qwen_cpu_{name} {value}"]
        lines += [f"# HELP qwen_cpu_generation_tokens_per_second Generated tokens per second over the last "
                  f"{RATE_WINDOW:g} s.", "# TYPE qwen_cpu_generation_tokens_per_second gauge",
                  f"qwen_cpu_generation_tokens_per_second {self.tokens_per_second():.3f}"]
        for key, value in sorted(scheduler_stats.items()):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                kind = "counter" if key.endswith("_total") else "gauge"
                lines += [f"# HELP qwen_cpu_scheduler_{key} Scheduler statistic {key}.",
                          f"# TYPE qwen_cpu_scheduler_{key} {kind}", f"qwen_cpu_scheduler_{key} {value}"]
        return "\n".join(lines) + "\n"
