"""Benchmark of the OpenAI-compatible gateway (issue 10): streamed chat through the
gateway against the same model's PredictStream called directly, in the same run.

    python -m bench.gateway              # c=1 and c=16, 3 alternating rounds (~3 min)
    python -m bench.gateway --smoke      # one tiny round on a stand-in model, no torch

Every server is a real process on 127.0.0.1 started as production starts it (etcd, a
control plane, one worker serving tiny-gpt2-chat as llm/v1/chat, `modelyard gateway`);
the load generator is another (kinds `chat_sse` and `chat_grpc`). Measured: time to first
token (first chunk with text) and completion tokens per second, from the answers' usage.
Goals: at most 2 ms added to the time to first token at c=1, at most 5% fewer tokens per
second at c=16.
"""
