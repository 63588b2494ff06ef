"""Locust load tests of the server's three faces: gRPC, V2 REST and gRPC-web.

Start with `make loadtest` or `locust -f loadtests/locust/locustfile.py` (docs/loadtesting.md).
"""
