"""The OpenAI-compatible HTTP gateway (`modelyard gateway`): /v1/chat/completions,
/v1/completions, /v1/embeddings and /v1/models over the routed client, with deployed
graphs whose output is text callable as models too."""
