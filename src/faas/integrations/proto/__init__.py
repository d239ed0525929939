"""Generated protobuf messages of the faas wire schema (`faas.proto`, package `faas.v1`).

`faas_pb2.py` and `faas_pb2.pyi` are generated: see README.md here to regenerate them.
"""
