"""Layer 2, server infrastructure: what every modelyard service shares and no client needs.

etcd access and informers, the error-mapping interceptor, settings loading, the
signal-driven service runner, port files. Imports layer 1 (`modelyard`) and never a service.
"""
