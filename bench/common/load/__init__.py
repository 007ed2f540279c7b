"""The one load generator: its own process, so its CPU never counts as the servers', and a
server the bench kills cannot take the measuring side with it.

    python -m bench.common.load '{"kind": "predict", "address": "127.0.0.1:50051", ...}'

N coroutines share one request budget (exactly `requests` are issued however they
interleave, none after the time cap), after a warm-up at the same concurrency and one
checked call. Latency is measured per call around `await`; percentiles are nearest-rank;
throughput is successful responses / wall time of the measured phase. gRPC requests are
serialised once up front and responses kept as bytes, so the client spends its CPU on
gRPC, not protobuf: on a 2-core machine every client cycle is taken from the servers.

Kinds of call (`LoadSpec.kind`), one module each:

  predict   Predict of one worker, raw bytes, over `channels` connections     (predict.py)
  predict_stream  that worker's PredictStream, timed to its first message     (predict.py)
  run       Composer.Run of a deployed (`graph`) or inline (`graph_inline`) graph (composer.py)
  stream    Composer.RunStream, timed to the first result of `node`            (composer.py)
  chain     the client calls workers itself in sequence, outputs -> next inputs (chain.py)
  fanout    the client calls workers itself, all at once                       (chain.py)
  http      POST JSON over a minimal HTTP/1.1 keep-alive client (BentoML)       (http.py)
  routed    RoutedClient.predict (one balancer shared by the coroutines)        (routed.py)
  chat_grpc  a worker's llm/v1/chat PredictStream, timed to its first token     (llm.py)
  chat_sse   the gateway's streamed /v1/chat/completions (server-sent events)   (llm.py)

Protocol on stdout, one JSON object a line (`time.monotonic()` is CLOCK_MONOTONIC, one
clock for every process on the machine, so a bench lines up its own events with these):

  {"event": "started", "at": <monotonic>}     the measured phase begins
  {"event": "result", ...}                    counts, latency percentiles, CPU use

`driver.run_load` runs it to completion; `driver.start_load` for benches that act while
it runs (kill a worker at t = 10 s).
"""
