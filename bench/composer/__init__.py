"""Benchmarks of the composer (issue 4), each against a baseline measured in the same run.

    python -m bench.composer                 # everything, 3.5-4.5 minutes on 2 cores
    python -m bench.composer --only hop,stream
    python -m bench.composer --only tracing   # what tracing costs (off, 100%, 10%), ~3 min
    python -m bench.composer --only soak      # admission control at 2x capacity, ~5 min
    python -m bench.composer --profile       # also py-spy the stack (+45 s)
    python -m bench.composer --whatif        # also the generators placed the other way
    python -m bench.composer --smoke         # one tiny round, stand-in models, no BentoML

Scenarios (bench/README.md, "Composer (issue 4)"), one module each:

    hop     added latency per hop: 3 Echo models as a sequential graph through the composer
            vs the client calling the same 3 workers itself, c=1 and c=16, and the floor:
            a bare grpc.aio relay of the same chain (relay_server) in the same rounds
    graph   the seed inference graph (gpt2 + distilgpt2 in parallel, then bert on each text)
            through the composer vs BentoML 1.4 serving the same graph with the same
            checkpoints (bentoml, bentoml_service/), c=1 and c=16; `probe` calls the
            generators directly; `rss` reports the whole stack's RSS meanwhile
    stream  time to the first downstream result of the streaming graph (gpt2 streaming into
            sentiment, word segments) vs the same graph without streaming
    tracing the seed graph at c=16 on three stacks alike but for tracing: off, every trace
            recorded and exported over OTLP to a local receiver, and 10% of them
    soak    admission control (issue 11): a one-node SlowEcho graph, open loop at twice the
            measured capacity for 60 s, on three stacks alike but for the composer's
            max_runs_in_flight (1.5x the workers' calls, unset = sized, off): goodput, p99,
            refusals by code, the composer's RSS, recovery

Every server is a real process on 127.0.0.1 (`stacks`: what `modelyard up` starts); the
load generator is another; every loop is bounded by a request count and a time cap.
BentoML runs from its own venv, .cache/bentoml-venv, created on the first run (about
1.5 min).
"""
