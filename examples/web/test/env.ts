// What the tests run against: a gateway (and server) that is already running.
//
//   GATEWAY_URL=http://127.0.0.1:8000 npm test
//
// tests/integration/test_web.py starts both on free ports and sets it. Without it, the
// tests that need a gateway are skipped, with that reason.
export const GATEWAY_URL = process.env.GATEWAY_URL ?? "";
export const needsGateway = GATEWAY_URL === "" ? "GATEWAY_URL is not set" : false;
