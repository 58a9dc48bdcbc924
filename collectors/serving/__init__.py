"""Serving collection: `/metrics` of engine workers and the router, scraped over HTTP (plain
TCP or an SSH forward), turned into per-interval samples: KV prefix-cache hit rate, TTFT and
ITL quantiles, queue depths, KV usage, and the router's per-worker load.
"""

from agentctl.collectors.serving.fetch import (
    FetchError,
    OpenStream,
    SocketLike,
    http_get_over,
    metrics_fetcher,
    open_socket,
)
from agentctl.collectors.serving.promtext import (
    Exposition,
    Histogram,
    PromTextError,
    Sample,
    counter_delta,
    histogram_delta,
    histogram_quantile,
    parse,
)
from agentctl.collectors.serving.scrape import (
    Quantiles,
    RouterSample,
    RouterWorker,
    ScrapeState,
    ServingSample,
)

__all__ = [
    "Exposition",
    "FetchError",
    "Histogram",
    "OpenStream",
    "PromTextError",
    "Quantiles",
    "RouterSample",
    "RouterWorker",
    "Sample",
    "ScrapeState",
    "ServingSample",
    "SocketLike",
    "counter_delta",
    "histogram_delta",
    "histogram_quantile",
    "http_get_over",
    "metrics_fetcher",
    "open_socket",
    "parse",
]
