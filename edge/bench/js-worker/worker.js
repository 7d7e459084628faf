// The reference for `make bench-http`: the least a JavaScript Worker does
// to answer a Data Action lookup from KV. It parses the JSON body, makes
// one KV get under a key derived from the number, and answers JSON. No
// authentication, no HMAC, no breaker, no metrics: what the Rust Worker
// (edge/worker) is measured against under the same `wrangler dev`.
//
// The first request for a number finds nothing and stores a record, so
// every later one is a cache hit, as the Rust Worker's are once warmed.
export default {
  async fetch(request, env) {
    let body;
    try {
      body = await request.json();
    } catch {
      return Response.json({ error: { code: "INVALID_JSON", message: "the body is not JSON" } }, { status: 400 });
    }
    const ani = typeof body?.ani === "string" ? body.ani.replace(/[^0-9+]/g, "") : "";
    if (ani.length < 8) {
      return Response.json({ error: { code: "INVALID_ANI", message: "ani is not a phone number" } }, { status: 400 });
    }
    const key = `bench:${ani}`;
    const record = await env.FAILSOFT_KV.get(key, "json");
    if (record === null) {
      const fresh = { customerId: "C-1001", tier: "VIP", storedAt: Date.now() };
      await env.FAILSOFT_KV.put(key, JSON.stringify(fresh));
      return Response.json({ found: true, customerId: fresh.customerId, tier: fresh.tier, source: "live" });
    }
    return Response.json({
      found: true,
      customerId: record.customerId,
      tier: record.tier,
      source: "cache",
      correlationId: body.correlationId ?? crypto.randomUUID(),
    });
  },
};
