"""Benchmarks of one modelyard worker, each against a baseline measured in the same run.

    python -m bench.worker            # all scenarios, about 2 minutes on 2 cores
    python -m bench.worker --only overhead --rounds 5
    python -m bench.worker --smoke    # one tiny round with stand-in models: does it run?

Scenarios (bench/README.md, "Worker benchmarks"), one module each:

    overhead   serving_overhead: the Echo model through Predict vs a bare grpc.aio server
    predict_many  predict_many: Echo as unary Predict calls vs as PredictMany stream
               messages (how the composer calls), c=1 and c=16, on one worker
    batching   batching: dynamic batching on vs off, tiny-bert-sentiment and tiny-gpt2
    rss        peak_rss: one worker serving three tiny models vs a worker serving only Echo
    memory     memory_worker, memory_stack: RSS/PSS of an Echo worker, a one-tiny-model
               worker (vs its old eager imports, and torch + transformers alone) and the
               whole `modelyard up examples/stack.yaml` stack, against issue 12's goals
    streaming  streaming: tiny-gpt2's generation through PredictStream vs Predict (worker
               CPU per request), and its time to first token vs a decoding step + round trip

Servers (`echo_server` and real workers) and the load generator are separate processes on
127.0.0.1 (predict_many's client is the bench process itself: its CPU is the caller's
side); ports are picked by the servers (port 0); every request loop is bounded by a
request count and a time cap.
"""
