"""The registered-API bench: what calling a third-party API through modelyard adds.

One local HTTP server answers every POST with the same small JSON document (the stand-in
API, `api_server`, its own process). It is registered with a real control plane (real
etcd) under a model name, and called two ways from this process, in alternating rounds
of the same run:

- direct: `httpx.AsyncClient.post` of the filled-in body, `response.json()` and the answer
  taken out by hand (what a program calling the API itself does);
- routed: `RoutedClient.predict(name, prompt=...)` with the HTTP caller as outside_apis:
  endpoint set, balancer, request -> template rendering, the SSRF guard, the pooled
  client, the size limit, JMESPath extraction, the cooldown bookkeeping, PredictResponse.

At c=1 and c=16 (coroutines sharing one client). Goal: <= 1 ms added to the median
latency at c=1. Also reported: this process's CPU per call (what the extra work costs).
"""
