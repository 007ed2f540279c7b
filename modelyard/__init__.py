"""modelyard: serve machine-learning models as gRPC microservices and compose them."""

__version__ = "0.1.0"
