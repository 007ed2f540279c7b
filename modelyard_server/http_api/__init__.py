"""Registered third-party inference APIs: what a registration may say (`placeholders`), and
how services call one (the pooled HTTP client, the SSRF guard, rendering, extraction)."""
