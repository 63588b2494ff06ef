"""Authentication, authorization and rate limits, with no transport in sight.

    credentials.Authenticator   request metadata -> a Principal, or Unauthenticated
      keys.KeyTable               the API keys file: SHA-256 digests -> principals
      tokens.TokenVerifier        JWT bearer tokens: HS256 secret, or RS256/ES256 JWKS
    principal.Principal         who calls: a name, the models it may use, admin, its rate
    caller.CALLER               the current RPC's caller, set by the transport's interceptor
    authorizer.CallerAuthorizer the data plane's Authorizer (server.core.access), reading it
    bucket.TokenBucket, Buckets rate limits: a token bucket per principal or peer address
    reloader.Reloader           re-reads changed files, periodically and on SIGHUP

The gRPC interceptor that drives them is `server.api.grpc.admission`; docs/security.md is
the operator's guide.
"""
