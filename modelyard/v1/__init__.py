"""Generated stubs of the modelyard.v1 API (`make protos` rebuilds them from protos/).

    from modelyard.v1 import predict_pb2, predict_pb2_grpc, value_pb2
"""
