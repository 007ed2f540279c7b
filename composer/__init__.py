"""The composer: stores inference graphs and runs them over streaming gRPC."""
